"""A throwaway PostgreSQL server for tests and benchmarks (Debian's binaries, loopback only).

Started in a temporary data directory (as the ``postgres`` user when running as root, since
PostgreSQL refuses root); it can be stopped and started again on the same port, which the
crash tests use to take the database away mid-run. ``skip_reason()`` says why none can start.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def skip_reason() -> str | None:
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg not installed: pip install -e '.[postgres]'"
    if pg_bin() is None:
        return "PostgreSQL server binaries not found (apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL as another user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """``with PgServer() as pg: pg.url``; ``pg.stop()`` and ``pg.start()`` in between."""

    def __init__(self) -> None:
        bin_dir = pg_bin()
        assert bin_dir is not None, skip_reason()
        self.bin = bin_dir
        # not under pytest's tmp dir: that is private to root, and the server runs as postgres
        self.root = Path(tempfile.mkdtemp(prefix="autotune-pg-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
            self.root.chmod(0o755)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [
                *self.prefix,
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        self.port = _free_port()
        self.server: subprocess.Popen[bytes] | None = None
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/autotune"

    def start(self, create_db: bool = False) -> None:
        self.server = subprocess.Popen(
            [
                *self.prefix,
                str(self.bin / "postgres"),
                *("-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.sock)),
                *("-c", "max_connections=200"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 60
        while True:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                break
            if time.time() > deadline or self.server.poll() is not None:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.2)
        if create_db:
            subprocess.run(
                [
                    str(self.bin / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "autotune",
                ],
                check=True,
                capture_output=True,
            )

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, committed data stays."""
        if self.server is not None and self.server.poll() is None:
            subprocess.run(
                [*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=120,
            )
            self.server.wait(timeout=60)
        self.server = None

    def __enter__(self) -> PgServer:
        self.start(create_db=True)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
