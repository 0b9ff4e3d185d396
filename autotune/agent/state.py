"""The agent's state behind the HTTP API: model store, job scheduler, upload validator, health."""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from autotune import __version__
from autotune.agent.config import AgentConfig
from autotune.agent.health import Tegrastats, health
from autotune.agent.jobcheck import protocol_bounds, runtime_bounds
from autotune.agent.scheduler import Job, Scheduler
from autotune.agent.schemas import BackendInfo, InfoResponse, JobView, QueueInfo
from autotune.agent.store import ModelStore
from autotune.agent.worker import PhaseTimeout, WorkerDied, WorkerProcess
from autotune.wire import PROTOCOL_VERSION, json_safe


class Agent:
    """State behind the HTTP API: model store, job scheduler, validator, health."""

    def __init__(self, cfg: AgentConfig) -> None:
        cfg.check()
        self.cfg = cfg
        self.root = Path(cfg.root).expanduser()
        self.store = ModelStore(self.root, cfg.max_model_bytes, cfg.max_store_bytes, cfg.min_free_bytes)
        self.workdir = self.root / "work"
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        memory = cfg.job_memory_bytes
        self.measure_worker = WorkerProcess(
            "measure", self.workdir, cfg.jobs_per_worker, cfg.startup_timeout_s, memory
        )
        self.validator = WorkerProcess("validate", self.workdir, 1000, cfg.startup_timeout_s, memory)
        self._validate_lock = threading.Lock()
        self.scheduler = Scheduler(
            self.measure_worker, cfg.max_queue, decorate=self._decorate, max_bytes=cfg.max_queued_input_bytes
        )
        self.instance_id = secrets.token_hex(8)
        self.hostname = socket.gethostname()
        self.started = time.time()
        self.tegra = Tegrastats()
        self.backends: dict[str, BackendInfo] = {}
        self.host_fingerprint: dict[str, Any] = {}
        self.runtime_fields: set[str] = set()
        self.protocol_fields: set[str] = set()
        self.uploads = 0
        models = re.escape(str(self.store.models_dir))
        self._model_path = re.compile(models + r"/([0-9a-f]{64})\.onnx")
        self._upload_path = re.compile(re.escape(str(self.store.tmp_dir)) + r"/[0-9a-f]+\.part")

    # -- lifecycle -----------------------------------------------------------------

    def spawn_workers(self) -> None:
        """Launch the job processes; they import their runtimes while the caller goes on."""
        self.measure_worker.spawn()
        self.validator.spawn()

    def start(self) -> None:
        """Start the job processes and learn what this device can run (blocks ~1 s)."""
        if not self.measure_worker.alive:
            self.spawn_workers()
        warm_validator = threading.Thread(target=self._warm_validator, daemon=True)
        warm_validator.start()
        self.measure_worker.ensure_started()
        info = self.measure_worker.request({"op": "info"}, {"prepare": self.cfg.startup_timeout_s})
        allowed = self.cfg.backends
        for name, b in info["backends"].items():
            if allowed is not None and name not in allowed:
                b = {**b, "available": False, "reason": "not enabled on this agent (--backends)"}
            self.backends[name] = BackendInfo(**b)
        self.host_fingerprint = dict(info["host"])
        self.runtime_fields = set(info["runtime_fields"])
        self.protocol_fields = set(info["protocol_fields"])
        warm_validator.join()
        self.scheduler.start()
        self.tegra.start()

    def _warm_validator(self) -> None:
        try:
            self.validator.ensure_started()
        except (PhaseTimeout, WorkerDied, OSError):
            pass  # retried on the first upload

    def stop(self) -> None:
        self.scheduler.stop()
        self.validator.stop()
        self.tegra.stop()

    # -- models --------------------------------------------------------------------

    def validate(self, path: Path) -> str | None:
        """Why the uploaded file is not acceptable (None: it is). Runs in a subprocess."""
        with self._validate_lock:
            try:
                self.validator.ensure_started()
                request = {"op": "validate", "path": str(path), "max_tensor_bytes": self.cfg.job_memory_bytes}
                event = self.validator.request(request, {"prepare": self.cfg.validate_timeout_s})
            except PhaseTimeout:
                return f"validation took longer than {self.cfg.validate_timeout_s:g} s"
            except WorkerDied as exc:
                why = "out of memory" if exc.killed else self.redact(str(exc))
                return f"validation failed: {why}"
        error = event.get("error")
        return self.redact(error) if error else None

    def redact(self, text: str) -> str:
        """Server paths out of a message for a client: models by id, the rest relative."""
        text = self._model_path.sub(r"model \1", text)
        text = self._upload_path.sub("the upload", text)
        return text.replace(str(self.root), "<agent root>")

    # -- jobs ----------------------------------------------------------------------

    def _decorate(self, job: Job) -> None:
        if job.error:
            job.error = self.redact(job.error)
        if job.measurement is None:
            return
        m = json_safe(job.measurement)
        if m.get("error"):
            m["error"] = self.redact(m["error"])
        m.setdefault("fingerprint", {})
        m["fingerprint"].setdefault("agent_version", __version__)
        m.setdefault("extra", {})["agent"] = {
            "hostname": self.hostname,
            "instance_id": self.instance_id,
            "job_id": job.id,
            "queued_s": round((job.started_at or job.created_at) - job.created_at, 4),
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "phases_s": {k: round(v, 4) for k, v in job.phases.items()},
        }
        job.measurement = m

    def view(self, job: Job) -> JobView:
        return JobView(
            job_id=job.id,
            status=job.status,  # type: ignore[arg-type]
            model_sha256=job.model_sha256,
            backend=job.backend,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            queue_position=self.scheduler.position(job) if job.status == "queued" else None,
            phases={k: round(v, 4) for k, v in job.phases.items()},
            error=job.error,
            submissions=job.submissions,
            measurement=json_safe(job.measurement) if job.measurement is not None else None,
        )

    def info(self) -> InfoResponse:
        s = self.scheduler
        return InfoResponse(
            protocol=PROTOCOL_VERSION,
            agent_version=__version__,
            instance_id=self.instance_id,
            hostname=self.hostname,
            auth="bearer" if self.cfg.token else "none",
            fingerprint=self.host_fingerprint,
            backends=self.backends,
            queue=QueueInfo(
                depth=s.depth,
                running=s.running.id if s.running else None,
                max_queue=s.max_queue,
                completed=s.counts["completed"],
                failed=s.counts["failed"],
                coalesced=s.counts["coalesced"],
            ),
            health={
                **health(self.root, self.tegra, self.started),
                "models": self.store.count(),
                "uploads": self.uploads,
                "job_processes_started": self.measure_worker.spawned,
            },
            limits={
                "max_model_bytes": self.cfg.max_model_bytes,
                "max_store_bytes": self.cfg.max_store_bytes,
                "max_input_bytes": self.cfg.max_input_bytes,
                "max_queue": self.cfg.max_queue,
                "max_queued_input_bytes": self.cfg.max_queued_input_bytes,
                "job_memory_bytes": self.cfg.job_memory_bytes,
                "header_timeout_s": self.cfg.header_timeout_s,
                "max_connections_per_client": self.cfg.max_connections_per_client,
                "max_unauthenticated_connections": self.cfg.max_unauthenticated_connections,
                "body_timeout_s": self.cfg.body_timeout_s,
                "lock_timeout_s": self.cfg.lock_timeout_s,
                "protocol": protocol_bounds(self.cfg),
                "runtime": runtime_bounds(self.cfg),
                "max_threads": self.cfg.max_threads,
                "timeouts_s": {
                    "startup": self.cfg.startup_timeout_s,
                    "prepare": self.cfg.prepare_timeout_s,
                    "measure": self.cfg.measure_timeout_s,
                },
            },
            test_hooks=self.cfg.test_hooks,
        )
