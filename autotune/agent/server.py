"""Serve the agent (protocol v1, ``docs/agent-protocol.md``): bind, start, run uvicorn.

>>> from autotune.agent import AgentConfig, serve
>>> serve(AgentConfig(host="127.0.0.1", port=8765))                # doctest: +SKIP

Safety rules, and where they are enforced:

- a bearer token is required whenever one is configured, and one must be configured unless
  the agent listens on loopback only (:mod:`autotune.agent.config`, :mod:`autotune.agent.routes`);
- a model is stored under its sha256 (checked to be 64 lowercase hex, then checked against the
  bytes), size-capped while it streams in, and validated in a subprocess
  (:mod:`autotune.agent.store`, :func:`autotune.agent.modelcheck.validate_model`);
- jobs name a model by hash and carry raw tensors (dtype, shape, base64): no pickles, no paths,
  no custom-op libraries (:mod:`autotune.agent.jobcheck`); each job runs in a subprocess with
  per-phase timeouts (:mod:`autotune.agent.worker`).
"""

from __future__ import annotations

import asyncio.constants
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from autotune import __version__
from autotune.agent.config import LIMIT_CONCURRENCY, AgentConfig, bind
from autotune.agent.guard import guarded_h11
from autotune.agent.routes import create_app
from autotune.agent.state import Agent
from autotune.agent.tls import fingerprint


def url_of(sock: socket.socket, host: str, scheme: str = "http") -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def serve(
    cfg: AgentConfig, announce: Callable[[str], None] | None = None, port_file: Path | None = None
) -> None:
    """Run the agent until SIGINT/SIGTERM. Prints one ``listening on URL`` line when ready."""
    agent = Agent(cfg)
    sock = bind(cfg.host, cfg.port)
    try:
        agent.spawn_workers()
        import uvicorn  # imports overlap with the job processes' own start-up

        app = create_app(agent)
        agent.start()
        keep_alive = 30
        guard = guarded_h11(
            cfg.header_timeout_s,
            cfg.max_connections_per_client,
            keep_alive,
            token=cfg.token,
            max_untrusted=cfg.max_unauthenticated_connections,
            body_timeout_s=cfg.body_timeout_s,
        )
        if cfg.tls_cert:
            # a TLS handshake happens before the guard sees the connection: asyncio's default
            # lets one that never finishes hold its socket 60 s; the head's deadline bounds it
            asyncio.constants.SSL_HANDSHAKE_TIMEOUT = cfg.header_timeout_s
        config = uvicorn.Config(
            app,
            http=guard,
            loop="asyncio",  # the handshake timeout above is asyncio's (uvloop has its own)
            log_level=cfg.log_level,
            access_log=cfg.access_log,
            lifespan="off",
            server_header=False,
            timeout_keep_alive=keep_alive,
            timeout_graceful_shutdown=3,
            limit_concurrency=LIMIT_CONCURRENCY,
            h11_max_incomplete_event_size=64 * 1024,  # a request head, not a megabyte of headers
            ssl_certfile=str(cfg.tls_cert) if cfg.tls_cert else None,
            ssl_keyfile=str(cfg.tls_key) if cfg.tls_key else None,
        )
        server = uvicorn.Server(config)
        url = url_of(sock, cfg.host, cfg.scheme)
        if port_file is not None:
            port_file.write_text(str(sock.getsockname()[1]))
        backends = ", ".join(n for n, b in agent.backends.items() if b.available) or "none"
        auth = "bearer token required" if cfg.token else "loopback only, no token"
        where = f"{auth}; backends: {backends}; models in {agent.root}"
        if cfg.tls_cert:
            pin = fingerprint(Path(cfg.tls_cert))
            (announce or _print)(
                f"TLS certificate SHA-256 fingerprint (pin it as options: fingerprint): {pin}"
            )
        (announce or _print)(f"autotune agent {__version__} listening on {url} ({where})")
        server.run(sockets=[sock])
    finally:
        agent.stop()
        sock.close()


def _print(line: str) -> None:
    print(line, flush=True)
    sys.stdout.flush()
