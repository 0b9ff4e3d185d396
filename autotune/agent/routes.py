"""The v1 routes (``docs/agent-protocol.md``) over one :class:`~autotune.agent.state.Agent`."""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from autotune import __version__
from autotune.agent.config import host_allowed, host_names
from autotune.agent.jobcheck import prepare_job
from autotune.agent.scheduler import Job, QueueFull
from autotune.agent.schemas import (
    JOB_ID_RE,
    AgentError,
    InfoResponse,
    JobCreated,
    JobRequest,
    JobView,
    ModelStored,
)
from autotune.agent.state import Agent
from autotune.agent.store import BadSha, ModelStore, NoSpace, TooLarge
from autotune.wire import TERMINAL

if TYPE_CHECKING:  # FastAPI is imported in create_app(), while the job processes start up
    from fastapi import FastAPI


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    if status in (400, 401):
        # a refused client does not keep its connection (nor a slot of its address) open
        headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


#: commas a job body may hold. Parsing JSON builds every value at once (a list of 20 million
#: numbers in a 38 MB body took the parser to gigabytes); base64 has no commas, so this bounds
#: the values outside the tensors' data, cheaply, before anything is parsed. A real job has
#: a few hundred (64 inputs of 8 dimensions, twice, and a few dozen options).
MAX_JOB_COMMAS = 16384


async def _read_capped(request: Request, cap: int, max_commas: int | None = None) -> bytearray:
    """The body, in one buffer (no further copies), refused past ``cap`` bytes or, when given,
    ``max_commas`` commas (the rest is read and dropped, so the client gets the answer)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise AgentError(413, "too_large", f"request body over the agent's cap of {cap} bytes")
    body = bytearray()
    size = commas = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise AgentError(413, "too_large", f"request body over the agent's cap of {cap} bytes")
        if max_commas is not None:
            commas += chunk.count(b",")
            if commas > max_commas:
                body = bytearray()  # keep reading (the size cap still holds), not keeping
                continue
        body += chunk
    if max_commas is not None and commas > max_commas:
        raise AgentError(
            400,
            "bad_request",
            f"the job holds over {max_commas} JSON values besides the tensors' data; runtime options, "
            "protocol and shapes are short lists",
        )
    return body


def _release_freed_memory() -> None:
    """Give the transient buffers of a large request back to the OS (glibc keeps freed heap and
    per-thread arenas otherwise, so the agent's footprint would grow with each big job)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _parse_job(body: bytearray) -> JobRequest:
    try:
        return JobRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise AgentError(400, "bad_request", f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def create_app(agent: Agent) -> FastAPI:
    """The v1 routes over one :class:`Agent` (already started)."""
    import anyio
    from fastapi import Depends, FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    token = agent.cfg.token
    names = host_names(agent.cfg)

    async def authorize(request: Request) -> None:
        host = request.headers.get("host", "")
        if not host_allowed(host, names):
            raise AgentError(
                400, "bad_host", f"Host {host[:100]!r} does not name this agent (see --allowed-host)"
            )
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
        size = agent.store.size(_sha(sha))  # one stat: an eviction in between cannot make it fail
        if size is None:
            return Response(status_code=404)
        return Response(status_code=200, headers={"X-Model-Size": str(size)})

    @app.put("/v1/models/{sha}", response_model=ModelStored, status_code=201)
    async def put_model(sha: str, request: Request) -> Any:
        size = agent.store.size(_sha(sha))
        if size is not None:
            return JSONResponse(ModelStored(sha256=sha, size=size, created=False).model_dump())
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > agent.store.max_bytes:
            raise AgentError(
                413, "too_large", f"model is larger than the agent's cap of {agent.store.max_bytes} bytes"
            )
        upload = agent.store.new_upload()
        try:
            async for chunk in request.stream():
                await anyio.to_thread.run_sync(upload.write, chunk)  # hashing and disk checks
            got = await anyio.to_thread.run_sync(upload.finish)
            if got != sha:
                raise AgentError(400, "bad_hash", f"the body's sha256 is {got}, not {sha}")
            why = await anyio.to_thread.run_sync(agent.validate, upload.path)
            if why is not None:
                raise AgentError(400, "invalid_model", why)
            agent.store.commit(upload, sha)
            agent.store.evict(agent.cfg.max_store_bytes, keep={sha} | agent.scheduler.inflight_models())
        except TooLarge as exc:
            raise AgentError(413, "too_large", str(exc)) from None
        except NoSpace as exc:
            raise AgentError(507, "insufficient_storage", str(exc)) from None
        finally:
            upload.discard()
        agent.uploads += 1
        return ModelStored(sha256=sha, size=upload.size, created=True)

    @app.post("/v1/jobs", response_model=JobCreated, status_code=202)
    async def post_job(request: Request) -> JobCreated:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":  # also keeps cross-site "simple" requests out
            raise AgentError(415, "unsupported_media_type", "a job is sent as Content-Type: application/json")
        body = await _read_capped(request, agent.cfg.max_input_bytes * 4 // 3 + 2**20, MAX_JOB_COMMAS)
        # JSON parsing, base64 decoding and hashing off the event loop
        req = await anyio.to_thread.run_sync(_parse_job, body)
        big = len(body) > 2**20
        del body  # the parsed request is the one copy a queued job keeps
        key, spec, timeouts, held = await anyio.to_thread.run_sync(prepare_job, agent, req)
        if big:
            _release_freed_memory()
        if held > agent.cfg.max_queued_input_bytes:
            raise AgentError(
                413,
                "too_large",
                f"the job's inputs take {held} bytes, over the agent's queue budget of "
                f"{agent.cfg.max_queued_input_bytes} bytes",
            )
        agent.store.touch(req.model_sha256)
        try:
            job, coalesced = agent.scheduler.submit(key, req.model_sha256, req.backend, spec, timeouts, held)
        except QueueFull as exc:
            status = 429 if exc.by_bytes else 503
            raise AgentError(status, "queue_full", str(exc), headers={"Retry-After": "1"}) from None
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

            def notify() -> None:
                loop.call_soon_threadsafe(finished.set)

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
