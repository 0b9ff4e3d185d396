"""Start ``autotune agent`` as a child process and wait until it listens (tests, benchmarks).

>>> with AgentProcess(root=tmp_path) as agent:                          # doctest: +SKIP
...     httpx.get(f"{agent.url}/v1/info").json()["queue"]

The token travels in the child's environment (never on its command line). ``prefix`` runs the
agent under another command, e.g. ``["ip", "netns", "exec", "edge"]`` for a network namespace.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from autotune.wire import TOKEN_ENV

_LISTENING = re.compile(r"listening on (\S+)")


class AgentProcess:
    """One agent process; ``url`` is known once :meth:`start` returns."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        root: Path | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        python: str = sys.executable,
        startup_timeout: float = 60.0,
        cwd: Path | None = None,
    ) -> None:
        self.host, self.port, self.token = host, port, token
        self._tmp = tempfile.TemporaryDirectory(prefix="autotune-agent-") if root is None else None
        self.root = Path(root) if root is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.args, self.extra_env, self.prefix = list(args), dict(env or {}), list(prefix)
        self.python = python
        self.cwd = cwd  # another directory keeps ``python -m`` from importing a checkout in cwd
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: collections.deque[str] = collections.deque(maxlen=200)
        self._found = threading.Event()
        self._deadline = 0.0

    def command(self) -> list[str]:
        agent = ["-m", "autotune", "agent", "--host", self.host, "--port", str(self.port)]
        agent += ["--root", str(self.root)]
        return [*self.prefix, self.python, *agent, *self.args]

    def start(self) -> AgentProcess:
        """Launch the agent and wait until it listens."""
        return self.launch().wait_ready()

    def launch(self) -> AgentProcess:
        """Launch without waiting (start several agents at once, then :meth:`wait_ready`)."""
        if self.alive:
            raise RuntimeError(f"agent already running (pid {self.pid})")
        env = {**os.environ, **self.extra_env}
        env.pop(TOKEN_ENV, None)
        if self.token:
            env[TOKEN_ENV] = self.token
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True, cwd=self.cwd,
        )  # fmt: skip
        self._found = threading.Event()
        threading.Thread(target=self._pump, args=(self.proc, self._found), daemon=True).start()
        self._deadline = time.monotonic() + self.startup_timeout
        return self

    def wait_ready(self) -> AgentProcess:
        assert self.proc is not None, "launch() first"
        while not self._found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > self._deadline:
                self.stop()
                raise RuntimeError(f"agent did not start: {' | '.join(self.output)[-2000:]}")
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def _pump(self, proc: subprocess.Popen[str], found: threading.Event) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line.rstrip())
            m = _LISTENING.search(line)
            if m and not found.is_set():
                self.url = m.group(1)
                found.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the agent alone (a crash): its job process notices and exits by itself."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful), then SIGKILL the whole process group."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the agent left behind
        except (ProcessLookupError, PermissionError):
            pass
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> AgentProcess:
        if self.proc is None:
            return self.start()
        return self if self.url else self.wait_ready()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
