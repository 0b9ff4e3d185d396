"""The agent's configuration and where it listens: :class:`AgentConfig`, the loopback check and
the listening socket. See ``docs/agent-protocol.md`` for the protocol these settings bound."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from autotune._util import cache_root
from autotune.agent.job import test_hooks_enabled

#: uvicorn's ``limit_concurrency`` (connections before it answers 503), and the most
#: connections without the token the agent keeps under it
LIMIT_CONCURRENCY = 1024
MAX_UNAUTHENTICATED = LIMIT_CONCURRENCY // 2
#: share of the available memory a job may use by default
JOB_MEMORY_SHARE = 0.75


def default_job_memory() -> int:
    """A share of the memory available now: not total RAM, which others' use already takes from."""
    return int(psutil.virtual_memory().available * JOB_MEMORY_SHARE)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


@dataclass
class AgentConfig:
    """Everything ``autotune agent`` can be told. Sizes in bytes, times in seconds."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    root: Path = field(default_factory=lambda: cache_root() / "agent")
    max_model_bytes: int = 512 * 2**20
    max_store_bytes: int = 10 * 2**30  # least recently used models are deleted beyond this
    max_input_bytes: int = 64 * 2**20
    max_queue: int = 64
    #: base64 inputs held by queued jobs, all together (a job over it gets 429)
    max_queued_input_bytes: int = 256 * 2**20
    #: free disk space every upload must leave (507 below it)
    min_free_bytes: int = 256 * 2**20
    #: address space a job may add to its process (RLIMIT_AS, CPU backends), and the largest
    #: tensor a model may declare or imply (0: no limit). Default: a share of the memory
    #: available when the agent starts
    job_memory_bytes: int = field(default_factory=default_job_memory)
    backends: tuple[str, ...] | None = None  # allow-list; None: every backend usable here
    startup_timeout_s: float = 120.0
    prepare_timeout_s: float = 60.0
    measure_timeout_s: float = 900.0  # engine builds on a Jetson take minutes
    validate_timeout_s: float = 120.0
    jobs_per_worker: int = 50
    max_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    test_hooks: bool = field(default_factory=test_hooks_enabled)
    #: a connection must send a complete request head within this (idle sockets are closed)
    header_timeout_s: float = 10.0
    max_connections_per_client: int = 32
    #: connections that have not shown the token, all addresses together (the oldest idle one
    #: is closed beyond it)
    max_unauthenticated_connections: int = 256
    #: a request body must bring guard.MIN_BODY_BYTES per this many seconds, or end
    body_timeout_s: float = 10.0
    #: how long a job waits for the device lock held by another process before it ends as
    #: ``timeout`` (at most half the job's measure timeout)
    lock_timeout_s: float = 60.0
    #: TLS: PEM certificate chain and key (``--tls-cert/--tls-key`` or ``--self-signed``)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: host names accepted in the Host header besides the bind address, localhost and IP literals
    allowed_hosts: tuple[str, ...] = ()
    log_level: str = "warning"
    access_log: bool = False

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    def check(self) -> None:
        """Refuse unsafe or impossible settings (ValueError with one line)."""
        if self.token is not None and len(self.token) < 16:
            raise ValueError("the token must be at least 16 characters")
        if self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without a token: anyone who can reach it could use "
                "the device. Create one (python -c 'import secrets; print(secrets.token_urlsafe(32))' "
                "> ~/.autotune-token; chmod 600 ~/.autotune-token) and pass --token-file ~/.autotune-token"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port}: not a TCP port")
        if not 1 <= self.max_unauthenticated_connections <= MAX_UNAUTHENTICATED:
            # uvicorn answers 503 to everyone beyond LIMIT_CONCURRENCY connections
            raise ValueError(
                f"--max-unauthenticated-connections {self.max_unauthenticated_connections}: "
                f"must be in 1..{MAX_UNAUTHENTICATED}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one); SO_REUSEADDR so a restart gets its port back."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(addr)
    sock.listen(1024)
    return sock


def host_names(cfg: AgentConfig) -> frozenset[str]:
    """Names accepted in the ``Host`` header: localhost, the bind address, this machine's name
    and every ``--allowed-host``."""
    hostname = socket.gethostname().lower()
    names = {"localhost", cfg.host.lower(), hostname, f"{hostname}.local"}
    return frozenset(names | {h.lower().rstrip(".") for h in cfg.allowed_hosts})


def host_allowed(header: str, names: frozenset[str]) -> bool:
    """Whether a request's ``Host`` header names this agent (the DNS-rebinding defence).

    IP literals always pass: a rebinding attack needs the attacker's domain name in ``Host``.
    """
    name = header.strip().lower()
    if name.startswith("["):  # [::1]:8765
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    name = name.rstrip(".")
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in names
