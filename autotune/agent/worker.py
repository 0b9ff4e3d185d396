"""The agent's side of a job subprocess (:mod:`autotune.agent.job`): spawn, talk, time out, kill.

A request moves through phases, each with its own deadline: ``startup`` (spawn and imports,
only when a fresh process is needed), ``prepare`` (decode inputs, pick the backend) and
``measure`` (session or engine build, warm-up and sampling). A phase that overruns kills the
process group (:class:`PhaseTimeout`); a process that dies raises :class:`WorkerDied` with its
signal and the tail of its stderr. Either way the agent lives on and the next job gets a fresh
process.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import autotune
from autotune._util import cache_root
from autotune.agent.job import MEMORY_ENV
from autotune.wire import TOKEN_ENV


class PhaseTimeout(Exception):
    def __init__(self, phase: str, limit_s: float) -> None:
        super().__init__(f"the {phase} phase exceeded its timeout of {limit_s:g} s")
        self.phase = phase
        self.limit_s = limit_s


class WorkerDied(Exception):
    def __init__(self, phase: str, returncode: int | None, stderr_tail: str) -> None:
        how = _describe_exit(returncode)
        tail = f": {stderr_tail}" if stderr_tail else ""
        super().__init__(f"job process {how} during {phase}{tail}")
        self.phase = phase
        self.returncode = returncode

    @property
    def killed(self) -> bool:
        """SIGKILL from outside: on a device this is almost always the kernel's OOM killer."""
        return self.returncode == -signal.SIGKILL


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def child_env(memory_bytes: int = 0, home: Path | None = None) -> dict[str, str]:
    """The job's environment: the agent's, minus anything that would load extra code, and minus
    the token (the job parses untrusted models: it has no use for it).

    ``home``: the job's HOME (its work directory), so what runtimes write there (onnxruntime's
    ``~/.cache/Microsoft/DeveloperTools``) stays in the agent's root, not the user's home; the
    XDG directories follow it, autotune's own cache (GPU engines) stays where the agent's is."""
    env = dict(os.environ)
    for key in ("PYTHONSTARTUP", "PYTHONINSPECT", "ORT_CUSTOM_OPS_LIB", TOKEN_ENV):
        env.pop(key, None)
    if home is not None:
        env.setdefault("AUTOTUNE_CACHE", str(cache_root()))
        env["HOME"] = str(home)
        for key in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
            env.pop(key, None)
    env[MEMORY_ENV] = str(max(0, int(memory_bytes)))
    # the job imports the same autotune as the agent (not another copy that its working
    # directory or an editable install would put first on sys.path)
    here = str(Path(autotune.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")  # threads are set per session; no hidden pools
    return env


class WorkerProcess:
    """One reusable job subprocess of a given role (``measure`` or ``validate``)."""

    def __init__(
        self,
        role: str,
        workdir: Path,
        max_uses: int = 50,
        startup_timeout: float = 120.0,
        memory_bytes: int = 0,
    ) -> None:
        self.role = role
        self.memory_bytes = memory_bytes
        self.workdir = workdir
        self.max_uses = max_uses
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.uses = 0
        self.spawned = 0
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: Any = None
        self._ready = False
        self._lock = threading.RLock()

    # -- lifecycle -----------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_started(self, timeout: float | None = None) -> float:
        """Start a fresh process if none is usable; return the seconds spent starting."""
        with self._lock:
            if self.alive and self.uses < self.max_uses and self._ready:
                return 0.0
            t0 = time.monotonic()
            if not (self.alive and self.uses < self.max_uses):
                self.spawn()
            self.wait_ready(timeout)
            return time.monotonic() - t0

    def spawn(self) -> None:
        """Start a fresh process without waiting for it (see :meth:`wait_ready`)."""
        with self._lock:
            self.stop()
            self._stderr = tempfile.TemporaryFile(dir=self.workdir)
            self._events = queue.Queue()
            self._ready = False
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autotune.agent.job", self.role],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                cwd=self.workdir,
                env=child_env(self.memory_bytes, home=self.workdir.resolve()),
                start_new_session=True,  # its own process group: a kill takes its children too
                close_fds=True,
            )
            self.uses = 0
            self.spawned += 1
            threading.Thread(target=self._pump, args=(self.proc, self._events), daemon=True).start()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the spawned process to finish its imports and say so."""
        with self._lock:
            if self._ready:
                return
            limit = timeout or self.startup_timeout
            event = self._next_event("startup", time.monotonic() + limit, limit)
            if event.get("event") != "ready":
                self.stop()
                raise WorkerDied("startup", None, f"unexpected first message {event!r}")
            self._ready = True

    @staticmethod
    def _pump(proc: subprocess.Popen[bytes], events: queue.Queue[dict[str, Any] | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                events.put(json.loads(line))
            except ValueError:
                continue
        events.put(None)

    def stop(self) -> None:
        """Kill the process group (if any) and forget the process."""
        with self._lock:
            proc, self.proc = self.proc, None
            self._ready = False
            if proc is not None:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        proc.kill()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                for stream in (proc.stdin, proc.stdout):
                    if stream is not None:
                        stream.close()
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None

    def interrupt(self) -> None:
        """Kill the running process now, from any thread (cancel); the request sees it die."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _stderr_tail(self, limit: int = 400) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 4096))
            text = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return " | ".join(lines[-3:])[-limit:]

    # -- requests ------------------------------------------------------------------

    def _next_event(self, phase: str, deadline: float, limit_s: float) -> dict[str, Any]:
        try:
            event = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self.stop()
            raise PhaseTimeout(phase, limit_s) from None
        if event is None:  # stdout closed: the process is gone
            proc = self.proc
            code = None
            if proc is not None:
                try:
                    code = proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = None
            tail = self._stderr_tail()
            self.stop()
            raise WorkerDied(phase, code, tail)
        return event

    def request(
        self, message: dict[str, Any], timeouts: dict[str, float], phases: dict[str, float] | None = None
    ) -> dict[str, Any]:
        """Send one request and wait for its result, phase by phase.

        ``timeouts`` maps phase -> seconds (``prepare`` first; the process announces later
        phases). ``phases`` (if given) receives the seconds spent in each phase.
        """
        with self._lock:
            if not self.alive or self.proc is None or self.proc.stdin is None:
                raise WorkerDied("prepare", None, "no job process")
            self.wait_ready()
            self.uses += 1
            phase = "prepare"
            started = time.monotonic()
            try:
                self.proc.stdin.write((json.dumps(message) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                tail = self._stderr_tail()
                self.stop()
                raise WorkerDied(phase, None, tail) from None
            while True:
                limit = timeouts.get(phase, 60.0)
                event = self._next_event(phase, started + limit, limit)
                now = time.monotonic()
                if event.get("event") == "phase":
                    if phases is not None:
                        phases[phase] = now - started
                    phase, started = str(event.get("phase")), now
                    continue
                if event.get("event") == "result":
                    if phases is not None:
                        phases[phase] = now - started
                    return event
