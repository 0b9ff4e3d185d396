"""Run the measurement agent on an edge device (HTTP, protocol v1; see ``docs/agent-protocol.md``).

Install on the device from this project's wheel (``autotune agent-wheel`` on the workstation, then
``pip install './autotune_hw-<version>-py3-none-any.whl[agent]'``; no torch). The agent listens on
loopback unless told otherwise; any other address needs a bearer token, read from
``--token-file`` or the AUTOTUNE_AGENT_TOKEN environment variable.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

_TOKEN_HINT = (
    "create one with: python -c 'import secrets; print(secrets.token_urlsafe(32))' > ~/.autotune-token "
    "&& chmod 600 ~/.autotune-token"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 or :: for the network, needs a token)",
    )
    p.add_argument("--port", type=int, default=8765, help="TCP port (default: 8765; 0 picks a free one)")
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token (default: $AUTOTUNE_AGENT_TOKEN, else no token)",
    )
    p.add_argument("--root", type=Path, help="where models are stored (default: ~/.cache/autotune/agent)")
    p.add_argument("--backends", help="comma-separated backends to offer (default: every one usable here)")
    p.add_argument("--max-model-mb", type=float, default=512, help="upload size cap (default: 512)")
    p.add_argument(
        "--max-store-mb", type=float, default=10240,
        help="models kept on disk; least recently used ones are deleted beyond this (default: 10240)",
    )  # fmt: skip
    p.add_argument("--max-input-mb", type=float, default=64, help="input tensors cap per job (default: 64)")
    p.add_argument("--max-queue", type=int, default=64, help="queued jobs before 503 (default: 64)")
    p.add_argument(
        "--jobs-per-process",
        type=int,
        default=50,
        help="recycle the job process after this many jobs (default: 50; 1 = fresh per job)",
    )
    p.add_argument(
        "--max-queued-input-mb", type=float, default=256,
        help="inputs held by all queued jobs together; more gets 429 (default: 256)",
    )  # fmt: skip
    p.add_argument(
        "--job-memory-mb", type=float, default=None,
        help="address space a job may add to its process (RLIMIT_AS, CPU backends), and the largest "
        "tensor a model may declare or imply, in any subgraph or function (default: 3/4 of the "
        "memory available when the agent starts; 0: no limit)",
    )  # fmt: skip
    p.add_argument(
        "--min-free-mb", type=float, default=256, help="free disk space uploads must leave (default: 256)"
    )
    # time, connection and lock limits: (flag, type, default, what it bounds; help adds the default)
    for flag, kind, default, what in (
        ("--startup-timeout", float, 120, "job process start, seconds"),
        ("--prepare-timeout", float, 60, "job input preparation, seconds"),
        ("--measure-timeout", float, 900, "build + warm-up + sampling of one job, seconds"),
        ("--header-timeout", float, 10, "seconds a connection has to send a complete request head"),
        ("--max-connections-per-client", int, 32, "open connections from one client address"),
        (
            "--max-unauthenticated-connections", int, 256,
            "open connections that have not shown the token, all addresses together; the oldest "
            "idle one is closed beyond it (at most 512)",
        ),
        ("--body-timeout", float, 10, "a request body must bring 64 KiB per this many seconds, or end"),
        (
            "--lock-timeout", float, 60,
            "seconds a job waits for the device while another process measures on it, then ends as "
            "timeout (at most half the measure timeout)",
        ),
    ):  # fmt: skip
        p.add_argument(flag, type=kind, default=default, help=f"{what} (default: {default})")
    p.add_argument("--tls-cert", type=Path, help="TLS certificate chain (PEM): serve https")
    p.add_argument("--tls-key", type=Path, help="TLS private key (PEM) for --tls-cert")
    p.add_argument(
        "--self-signed", action="store_true",
        help="serve https with a self-signed certificate kept in the root; prints the fingerprint to pin",
    )  # fmt: skip
    p.add_argument(
        "--allowed-host", action="append", default=[], metavar="NAME",
        help="a host name clients use for this agent (Host header check; repeatable)",
    )  # fmt: skip
    p.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--access-log", action="store_true", help="log every request")


def read_token(path: Path | None) -> str | None:
    """The token from ``path`` or AUTOTUNE_AGENT_TOKEN; UserError when a named file is unusable."""
    from autotune.errors import UserError

    if path is None:
        from autotune.wire import TOKEN_ENV

        token = os.environ.get(TOKEN_ENV, "").strip()
        return token or None
    path = path.expanduser()
    if not path.is_file():
        raise UserError(f"--token-file {path}: no such file; {_TOKEN_HINT}")
    token = path.read_text().strip()
    if not token:
        raise UserError(f"--token-file {path}: the file is empty; {_TOKEN_HINT}")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"autotune agent: warning: {path} is readable by others; chmod 600 {path}", file=sys.stderr)
    return token


def run(args: argparse.Namespace) -> int:
    from autotune._util import cache_root
    from autotune.errors import UserError

    token = read_token(args.token_file)
    for name in ("max_queue", "jobs_per_process", "max_connections_per_client"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    positive = (
        "max_model_mb",
        "max_store_mb",
        "max_input_mb",
        "startup_timeout",
        "prepare_timeout",
        "measure_timeout",
        "max_queued_input_mb",
        "header_timeout",
        "body_timeout",
        "lock_timeout",
    )
    for name in positive:
        if not getattr(args, name) > 0:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be positive")
    if args.job_memory_mb is not None and args.job_memory_mb < 0:
        raise UserError(f"--job-memory-mb {args.job_memory_mb}: must be 0 (no limit) or positive")
    if args.self_signed and (args.tls_cert or args.tls_key):
        raise UserError("--self-signed or --tls-cert/--tls-key, not both")
    try:
        from autotune.agent.config import AgentConfig
        from autotune.agent.server import serve
    except ImportError as exc:
        raise UserError(
            f"the agent needs its extra: pip install './autotune_hw-<version>-py3-none-any.whl[agent]' "
            f"(or pip install -e '.[agent]' in a checkout) ({exc})"
        ) from None
    root = args.root.expanduser() if args.root else cache_root() / "agent"
    tls_cert, tls_key = args.tls_cert, args.tls_key
    if args.self_signed:
        from autotune.agent.tls import self_signed

        try:
            tls_cert, tls_key = self_signed(root)
        except (RuntimeError, OSError) as exc:
            raise UserError(f"--self-signed: {exc}") from None
    cfg = AgentConfig(
        host=args.host,
        port=args.port,
        token=token,
        root=root,
        max_model_bytes=int(args.max_model_mb * 2**20),
        max_store_bytes=int(args.max_store_mb * 2**20),
        max_input_bytes=int(args.max_input_mb * 2**20),
        max_queue=args.max_queue,
        backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()) if args.backends else None,
        startup_timeout_s=args.startup_timeout,
        prepare_timeout_s=args.prepare_timeout,
        measure_timeout_s=args.measure_timeout,
        jobs_per_worker=args.jobs_per_process,
        max_queued_input_bytes=int(args.max_queued_input_mb * 2**20),
        min_free_bytes=int(args.min_free_mb * 2**20),
        header_timeout_s=args.header_timeout,
        max_connections_per_client=args.max_connections_per_client,
        max_unauthenticated_connections=args.max_unauthenticated_connections,
        body_timeout_s=args.body_timeout,
        lock_timeout_s=args.lock_timeout,
        tls_cert=tls_cert.expanduser() if tls_cert else None,
        tls_key=tls_key.expanduser() if tls_key else None,
        allowed_hosts=tuple(args.allowed_host),
        log_level=args.log_level,
        access_log=args.access_log,
    )
    if args.job_memory_mb is not None:
        cfg.job_memory_bytes = int(args.job_memory_mb * 2**20)
    try:
        cfg.check()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        serve(cfg, port_file=args.port_file)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0
