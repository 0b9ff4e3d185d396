"""The agent's configuration and where it listens: :class:`AgentConfig`, the loopback check and
the listening socket. See ``docs/agent-protocol.md`` for the protocol these settings bound."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from autotune._util import cache_root
from autotune.agent.job import test_hooks_enabled


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
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


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
    backends: tuple[str, ...] | None = None  # allow-list; None: every backend usable here
    startup_timeout_s: float = 120.0
    prepare_timeout_s: float = 60.0
    measure_timeout_s: float = 900.0  # engine builds on a Jetson take minutes
    validate_timeout_s: float = 120.0
    jobs_per_worker: int = 50
    max_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    test_hooks: bool = field(default_factory=test_hooks_enabled)
    log_level: str = "warning"
    access_log: bool = False

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
    sock.listen(128)
    return sock
