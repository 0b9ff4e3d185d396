"""The agent's HTTP server (protocol v1): FastAPI app, bearer-token auth, and :func:`serve`.

>>> from autotune.agent import AgentConfig, serve
>>> serve(AgentConfig(host="127.0.0.1", port=8765))                # doctest: +SKIP

Safety rules enforced here:

- a bearer token is required whenever one is configured, and one must be configured unless
  the agent listens on loopback only;
- a model is stored under its sha256 (checked to be 64 lowercase hex, then checked against the
  bytes), size-capped while it streams in, and validated by ``onnx.checker`` in a subprocess;
  external-data tensors and custom operator domains are refused;
- jobs name a model by hash and carry raw tensors (dtype, shape, base64): no pickles, no paths,
  no custom-op libraries; each job runs in a subprocess with per-phase timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import math
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from autotune import __version__
from autotune._util import cache_root
from autotune.agent.health import Tegrastats, health
from autotune.agent.job import test_hooks_enabled
from autotune.agent.scheduler import Job, QueueFull, Scheduler
from autotune.agent.schemas import (
    JOB_ID_RE,
    BackendInfo,
    InfoResponse,
    JobCreated,
    JobRequest,
    JobView,
    ModelStored,
    QueueInfo,
)
from autotune.agent.store import BadSha, ModelStore, TooLarge
from autotune.agent.worker import PhaseTimeout, WorkerDied, WorkerProcess
from autotune.wire import DTYPES, PROTOCOL_VERSION, TERMINAL, json_safe

if TYPE_CHECKING:  # FastAPI is imported in create_app(), while the job processes start up
    from fastapi import FastAPI

_ITEMSIZE = {
    "float32": 4,
    "float16": 2,
    "float64": 8,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
assert set(_ITEMSIZE) == set(DTYPES)


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


class AgentError(Exception):
    """An error answer: HTTP status, a code from :mod:`autotune.agent.schemas`, one line."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


class Agent:
    """State behind the HTTP API: model store, job scheduler, validator, health."""

    def __init__(self, cfg: AgentConfig) -> None:
        cfg.check()
        self.cfg = cfg
        self.root = Path(cfg.root).expanduser()
        self.store = ModelStore(self.root, cfg.max_model_bytes)
        self.workdir = self.root / "work"
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.measure_worker = WorkerProcess(
            "measure", self.workdir, cfg.jobs_per_worker, cfg.startup_timeout_s
        )
        self.validator = WorkerProcess("validate", self.workdir, 1000, cfg.startup_timeout_s)
        self._validate_lock = threading.Lock()
        self.scheduler = Scheduler(self.measure_worker, cfg.max_queue, decorate=self._decorate)
        self.instance_id = secrets.token_hex(8)
        self.hostname = socket.gethostname()
        self.started = time.time()
        self.tegra = Tegrastats()
        self.backends: dict[str, BackendInfo] = {}
        self.host_fingerprint: dict[str, Any] = {}
        self.runtime_fields: set[str] = set()
        self.protocol_fields: set[str] = set()
        self.uploads = 0

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
                event = self.validator.request(
                    {"op": "validate", "path": str(path)}, {"prepare": self.cfg.validate_timeout_s}
                )
            except PhaseTimeout:
                return f"validation took longer than {self.cfg.validate_timeout_s:g} s"
            except WorkerDied as exc:
                return f"validation failed: {exc}"
        return event.get("error")

    # -- jobs ----------------------------------------------------------------------

    def prepare_job(self, req: JobRequest) -> tuple[str, dict[str, Any], dict[str, float]]:
        """Check a job request; return its coalescing key, the subprocess spec and timeouts."""
        b = self.backends.get(req.backend)
        if b is None or not b.available:
            usable = ", ".join(n for n, i in self.backends.items() if i.available) or "none"
            why = f" ({b.reason})" if b is not None and b.reason else ""
            raise AgentError(
                400, "bad_request", f"backend {req.backend!r} is not available here{why}; usable: {usable}"
            )
        if not self.store.has(req.model_sha256):
            raise AgentError(
                409,
                "unknown_model",
                f"model {req.model_sha256} is not uploaded; PUT /v1/models/{{sha256}} first",
            )
        unknown = set(req.options) - self.runtime_fields
        if unknown:
            raise AgentError(
                400,
                "bad_request",
                f"unknown runtime options {sorted(unknown)}; known: {sorted(self.runtime_fields)}",
            )
        unknown = set(req.protocol) - self.protocol_fields
        if unknown:
            raise AgentError(
                400,
                "bad_request",
                f"unknown protocol fields {sorted(unknown)}; known: {sorted(self.protocol_fields)}",
            )
        threads = req.options.get("threads", 1)
        if (
            not isinstance(threads, int)
            or isinstance(threads, bool)
            or not 1 <= threads <= self.cfg.max_threads
        ):
            raise AgentError(
                400,
                "bad_request",
                f"threads must be an integer in 1..{self.cfg.max_threads}, got {threads!r}",
            )
        for k, v in req.protocol.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise AgentError(400, "bad_request", f"protocol.{k} must be a non-negative number, got {v!r}")
        if req.test is not None and not self.cfg.test_hooks:
            raise AgentError(400, "bad_request", "test hooks are disabled on this agent")
        total = 0
        digests = []
        names = set()
        for t in req.inputs:
            if t.name in names:
                raise AgentError(400, "bad_request", f"input {t.name!r} given twice")
            names.add(t.name)
            if any(d < 0 for d in t.shape):
                raise AgentError(400, "bad_request", f"input {t.name!r}: negative dimension in {t.shape}")
            try:
                raw = base64.b64decode(t.data, validate=True)
            except (binascii.Error, ValueError):
                raise AgentError(400, "bad_request", f"input {t.name!r}: data is not base64") from None
            expected = math.prod(t.shape) * _ITEMSIZE[t.dtype]
            if len(raw) != expected:
                raise AgentError(
                    400,
                    "bad_request",
                    f"input {t.name!r}: {len(raw)} bytes, shape {t.shape} {t.dtype} needs {expected}",
                )
            total += len(raw)
            if total > self.cfg.max_input_bytes:
                raise AgentError(
                    413, "too_large", f"inputs exceed the agent's cap of {self.cfg.max_input_bytes} bytes"
                )
            digests.append([t.name, t.dtype, list(t.shape), hashlib.sha256(raw).hexdigest()])
        identity = {
            "model": req.model_sha256,
            "backend": req.backend,
            "options": req.options,
            "protocol": req.protocol,
            "inputs": digests,
            "test": req.test,
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        spec = {
            "model_path": str(self.store.path(req.model_sha256)),
            "backend": req.backend,
            "options": req.options,
            "protocol": req.protocol,
            "inputs": [t.model_dump() for t in req.inputs],
            "test": req.test,
        }
        caps = {
            "startup": self.cfg.startup_timeout_s,
            "prepare": self.cfg.prepare_timeout_s,
            "measure": self.cfg.measure_timeout_s,
        }
        asked = {
            "startup": req.timeouts.startup_s,
            "prepare": req.timeouts.prepare_s,
            "measure": req.timeouts.measure_s,
        }
        timeouts = {k: min(cap, asked[k] or cap) for k, cap in caps.items()}
        return key, spec, timeouts

    def _decorate(self, job: Job) -> None:
        if job.measurement is None:
            return
        m = json_safe(job.measurement)
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
                "max_threads": self.cfg.max_threads,
                "timeouts_s": {
                    "startup": self.cfg.startup_timeout_s,
                    "prepare": self.cfg.prepare_timeout_s,
                    "measure": self.cfg.measure_timeout_s,
                },
            },
            test_hooks=self.cfg.test_hooks,
        )


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def _read_capped(request: Request, cap: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise AgentError(413, "too_large", f"request body over the agent's cap of {cap} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise AgentError(413, "too_large", f"request body over the agent's cap of {cap} bytes")
    return bytes(body)


def create_app(agent: Agent) -> FastAPI:
    """The v1 routes over one :class:`Agent` (already started)."""
    import anyio
    from fastapi import Depends, FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    token = agent.cfg.token

    async def authorize(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise AgentError(
                401, "unauthorized", "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    app = FastAPI(
        title="autotune agent",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(authorize)],
    )

    @app.exception_handler(AgentError)
    async def _agent_error(request: Request, exc: AgentError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        return _error(
            400, "bad_request", f"{'.'.join(map(str, first.get('loc', [])))}: {first.get('msg', exc)}"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.get("/v1/info", response_model=InfoResponse)
    async def info() -> InfoResponse:
        return agent.info()

    def _sha(sha: str) -> str:
        try:
            return ModelStore.check_sha(sha)
        except BadSha as exc:
            raise AgentError(400, "bad_request", str(exc)) from None

    @app.head("/v1/models/{sha}")
    async def has_model(sha: str) -> Response:
        if not agent.store.has(_sha(sha)):
            return Response(status_code=404)
        return Response(status_code=200, headers={"X-Model-Size": str(agent.store.size(sha))})

    @app.put("/v1/models/{sha}", response_model=ModelStored, status_code=201)
    async def put_model(sha: str, request: Request) -> Any:
        _sha(sha)
        if agent.store.has(sha):
            return JSONResponse(
                ModelStored(sha256=sha, size=agent.store.size(sha), created=False).model_dump()
            )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > agent.store.max_bytes:
            raise AgentError(
                413, "too_large", f"model is larger than the agent's cap of {agent.store.max_bytes} bytes"
            )
        upload = agent.store.new_upload()
        try:
            async for chunk in request.stream():
                upload.write(chunk)
            got = upload.finish()
            if got != sha:
                raise AgentError(400, "bad_hash", f"the body's sha256 is {got}, not {sha}")
            why = await anyio.to_thread.run_sync(agent.validate, upload.path)
            if why is not None:
                raise AgentError(400, "invalid_model", why)
            agent.store.commit(upload, sha)
            agent.store.evict(agent.cfg.max_store_bytes, keep={sha} | agent.scheduler.inflight_models())
        except TooLarge as exc:
            raise AgentError(413, "too_large", str(exc)) from None
        finally:
            upload.discard()
        agent.uploads += 1
        return ModelStored(sha256=sha, size=upload.size, created=True)

    @app.post("/v1/jobs", response_model=JobCreated, status_code=202)
    async def post_job(request: Request) -> JobCreated:
        body = await _read_capped(request, agent.cfg.max_input_bytes * 4 // 3 + 2**20)
        try:
            req = JobRequest.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise AgentError(
                400, "bad_request", f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
            ) from None
        key, spec, timeouts = agent.prepare_job(req)
        agent.store.touch(req.model_sha256)
        try:
            job, coalesced = agent.scheduler.submit(key, req.model_sha256, req.backend, spec, timeouts)
        except QueueFull as exc:
            raise AgentError(503, "queue_full", str(exc), headers={"Retry-After": "1"}) from None
        return JobCreated(job_id=job.id, status=job.status, coalesced=coalesced)  # type: ignore[arg-type]

    def _job(job_id: str) -> Job:
        if not JOB_ID_RE.fullmatch(job_id):
            raise AgentError(400, "bad_request", "a job id is 32 lowercase hex characters")
        job = agent.scheduler.get(job_id)
        if job is None:
            raise AgentError(404, "unknown_job", f"no job {job_id} on this agent (restarted, or expired)")
        return job

    @app.get("/v1/jobs/{job_id}", response_model=JobView)
    async def get_job(job_id: str, wait: float = 0.0) -> JobView:
        """``?wait=S`` holds the answer up to S seconds (max 30) until the job is finished."""
        job = _job(job_id)
        if wait > 0 and job.status not in TERMINAL:
            loop = asyncio.get_running_loop()
            finished = asyncio.Event()
            notify: Callable[[], None] = lambda: loop.call_soon_threadsafe(finished.set)  # noqa: E731
            agent.scheduler.add_waiter(job, notify)
            try:
                await asyncio.wait_for(finished.wait(), timeout=min(wait, 30.0))
            except (TimeoutError, asyncio.TimeoutError):
                pass
            finally:
                agent.scheduler.remove_waiter(job, notify)
        return agent.view(job)

    @app.delete("/v1/jobs/{job_id}", response_model=JobView)
    async def cancel_job(job_id: str) -> JobView:
        job = _job(job_id)
        agent.scheduler.cancel(job.id)
        return agent.view(job)

    return app


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


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


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
        config = uvicorn.Config(
            app,
            log_level=cfg.log_level,
            access_log=cfg.access_log,
            lifespan="off",
            server_header=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=3,
            limit_concurrency=256,
        )
        server = uvicorn.Server(config)
        url = url_of(sock, cfg.host)
        if port_file is not None:
            port_file.write_text(str(sock.getsockname()[1]))
        backends = ", ".join(n for n, b in agent.backends.items() if b.available) or "none"
        auth = "bearer token required" if cfg.token else "loopback only, no token"
        where = f"{auth}; backends: {backends}; models in {agent.root}"
        (announce or _print)(f"autotune agent {__version__} listening on {url} ({where})")
        server.run(sockets=[sock])
    finally:
        agent.stop()
        sock.close()


def _print(line: str) -> None:
    print(line, flush=True)
    sys.stdout.flush()
