"""One measurement at a time per device: a FIFO queue served by a single thread.

Identical in-flight jobs (same coalescing key: model, backend, options, protocol, inputs) share
one job id. Every job records when it started and finished, so anyone can check that no two
measurements overlapped. Finished jobs are kept (newest ``retention``) for clients to collect.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autotune._util import error_line
from autotune.agent.worker import PhaseTimeout, WorkerDied, WorkerProcess

USABLE = ("ok", "unstable")
#: a finished job keeps its record for clients to collect: a bounded one
MAX_ERROR_CHARS = 2000


class QueueFull(Exception):
    def __init__(self, message: str, by_bytes: bool = False) -> None:
        super().__init__(message)
        self.by_bytes = by_bytes


@dataclass
class Job:
    id: str
    key: str
    model_sha256: str
    backend: str
    spec: dict[str, Any]
    timeouts: dict[str, float]
    held_bytes: int = 0  # input bytes in ``spec`` while queued
    status: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    measurement: dict[str, Any] | None = None
    submissions: int = 1
    cancel_requested: bool = False
    waiters: list[Callable[[], None]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status not in ("queued", "running")


class Scheduler:
    """Queue + single runner thread in front of one :class:`WorkerProcess`."""

    def __init__(
        self,
        worker: WorkerProcess,
        max_queue: int = 64,
        retention: int = 4096,
        decorate: Callable[[Job], None] | None = None,
        max_bytes: int = 0,
    ) -> None:
        self.worker = worker
        self.max_queue = max_queue
        self.max_bytes = max_bytes  # inputs held by queued jobs, all together (0: no cap)
        self.queued_bytes = 0
        self.retention = retention
        self.decorate = decorate  # adds agent details to a finished job's measurement
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._inflight: dict[str, Job] = {}
        self.running: Job | None = None
        self.counts = {"completed": 0, "failed": 0, "coalesced": 0}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="autotune-agent-jobs", daemon=True)

    # -- public --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            for job in self._queue:
                self._finish_locked(job, "cancelled", None, "agent shutting down")
            self._queue.clear()
            self.queued_bytes = 0
            self._cond.notify_all()
        self.worker.interrupt()
        self._thread.join(timeout=15)
        self.worker.stop()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(
        self,
        key: str,
        model_sha256: str,
        backend: str,
        spec: dict[str, Any],
        timeouts: dict[str, float],
        held_bytes: int = 0,
    ) -> tuple[Job, bool]:
        """Queue a job, or return the identical job already queued or running.

        QueueFull when the queue holds ``max_queue`` jobs or its inputs would exceed ``max_bytes``.
        """
        with self._cond:
            same = self._inflight.get(key)
            if same is not None and not same.done and not same.cancel_requested:
                same.submissions += 1
                self.counts["coalesced"] += 1
                return same, True
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"queue is full ({self.max_queue} jobs); retry later")
            if self.max_bytes and self.queued_bytes + held_bytes > self.max_bytes:
                raise QueueFull(
                    f"queued jobs hold {self.queued_bytes} bytes of inputs; {held_bytes} more would "
                    f"exceed the agent's budget of {self.max_bytes} bytes; retry later",
                    by_bytes=True,
                )
            job = Job(
                id=secrets.token_hex(16),
                key=key,
                model_sha256=model_sha256,
                backend=backend,
                spec=spec,
                timeouts=timeouts,
                held_bytes=held_bytes,
            )
            self.queued_bytes += held_bytes
            self._jobs[job.id] = job
            self._inflight[key] = job
            self._queue.append(job)
            self._cond.notify_all()
            return job, False

    def inflight_models(self) -> set[str]:
        """Models of queued and running jobs (not to be evicted from the store)."""
        with self._cond:
            live = [j for j in self._inflight.values() if not j.done]
            return {j.model_sha256 for j in live} | {
                j.spec["reference_sha256"] for j in live if j.spec.get("reference_sha256")
            }

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        with self._cond:
            try:
                return self._queue.index(job)
            except ValueError:
                return None

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once; a running one is killed and reported ``cancelled``."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.done:
                return job
            job.cancel_requested = True
            if job.status == "queued":
                self._queue.remove(job)
                self.queued_bytes -= job.held_bytes
                self._finish_locked(job, "cancelled", None, "cancelled by a client")
                waiters = list(job.waiters)
            else:
                waiters = []
        if job.status == "running":
            self.worker.interrupt()
        for notify in waiters:
            notify()
        return job

    def add_waiter(self, job: Job, notify: Callable[[], None]) -> None:
        """Call ``notify()`` (from the runner thread) once ``job`` is finished."""
        with self._cond:
            if not job.done:
                job.waiters.append(notify)
                return
        notify()

    def remove_waiter(self, job: Job, notify: Callable[[], None]) -> None:
        with self._cond:
            if notify in job.waiters:
                job.waiters.remove(notify)

    # -- runner --------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                self.queued_bytes -= job.held_bytes
                job.status = "running"
                job.started_at = time.time()
                self.running = job
            status, measurement, error = self._run(job)
            with self._cond:
                if job.cancel_requested:
                    status, measurement, error = "cancelled", None, "cancelled by a client"
                self._finish_locked(job, status, measurement, error)
                self.running = None
                waiters = list(job.waiters)
            for notify in waiters:
                notify()
            if not self._stopping and not self.worker.alive and not self._queue:
                try:  # warm a fresh process while idle, not inside the next job
                    self.worker.ensure_started()
                except (PhaseTimeout, WorkerDied, OSError):
                    pass

    def _run(self, job: Job) -> tuple[str, dict[str, Any] | None, str | None]:
        try:
            spent = self.worker.ensure_started(job.timeouts.get("startup"))
            if spent:
                job.phases["startup"] = spent
            event = self.worker.request({"op": "measure", "spec": job.spec}, job.timeouts, job.phases)
        except PhaseTimeout as exc:
            return "timeout", None, str(exc)
        except WorkerDied as exc:
            return ("oom" if exc.killed else "runtime_error"), None, str(exc)
        except Exception as exc:  # noqa: BLE001 - the runner thread must survive anything
            self.worker.stop()
            return "runtime_error", None, f"agent: {error_line(exc)}"
        status = str(event.get("status", "runtime_error"))
        measurement = event.get("measurement")
        error = event.get("error") or (measurement or {}).get("error")
        if status not in USABLE:
            self.worker.stop()  # whatever went wrong, the next job gets a clean process
        return status, measurement, error

    def _finish_locked(
        self, job: Job, status: str, measurement: dict[str, Any] | None, error: str | None
    ) -> None:
        job.status = status
        job.measurement = measurement
        job.error = error[:MAX_ERROR_CHARS] if error else error
        job.finished_at = time.time()
        job.spec = {}  # inputs can be large; a finished job keeps only its record
        if self._inflight.get(job.key) is job:
            del self._inflight[job.key]
        self.counts["completed" if status in USABLE else "failed"] += 1
        if self.decorate is not None:
            try:
                self.decorate(job)
            except Exception:  # noqa: BLE001 - decoration is best effort
                pass
        self._finished[job.id] = None
        while len(self._finished) > self.retention:
            old, _ = self._finished.popitem(last=False)
            self._jobs.pop(old, None)
