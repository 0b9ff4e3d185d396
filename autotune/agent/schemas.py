"""Typed requests and responses of protocol v1 (``/v1/...``).

Every error answer has the same shape, :class:`ErrorBody`: ``{"error": code, "detail": text}``
with codes ``unauthorized``, ``bad_request``, ``bad_hash``, ``invalid_model``, ``too_large``,
``unknown_model``, ``unknown_job``, ``queue_full``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autotune.wire import DTYPES, JobStatusName

#: a model id: lowercase hex sha256 -- also the only thing from a client that names a file
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: a job id: lowercase hex uuid4 chosen by the agent
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")

Scalar = bool | int | float | str | None
#: a list option (CPU affinity): no longer than any machine's core count
ShortList = Annotated[list[Scalar], Field(max_length=4096)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ErrorBody(_Strict):
    error: str
    detail: str


class TensorIn(_Strict):
    """One input tensor: raw bytes (C order, little endian), base64 encoded."""

    name: str = Field(min_length=1, max_length=256)
    dtype: Literal[DTYPES]  # type: ignore[valid-type]
    shape: list[int] = Field(max_length=8)
    data: str = Field(description="base64 of the raw bytes")


class Timeouts(_Strict):
    """Per-phase limits for one job, each capped by the agent's own maximum."""

    startup_s: float | None = Field(default=None, gt=0)
    prepare_s: float | None = Field(default=None, gt=0)
    measure_s: float | None = Field(default=None, gt=0)


class JobRequest(_Strict):
    """``POST /v1/jobs``: measure an uploaded model with one backend of the agent."""

    model_sha256: str = Field(pattern=SHA256_RE.pattern)
    backend: str = Field(default="ort-cpu", pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    options: dict[str, Scalar | ShortList] = Field(
        default_factory=dict, max_length=64, description="RuntimeOptions"
    )
    protocol: dict[str, Scalar] = Field(default_factory=dict, max_length=64, description="Protocol")
    inputs: list[TensorIn] = Field(default_factory=list, max_length=64)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    #: paired timing: an uploaded model timed interleaved with this one (latency as a ratio to it)
    reference_sha256: str | None = Field(default=None, pattern=SHA256_RE.pattern)
    #: the reference's inputs when they differ from ``inputs`` (None: the same)
    reference_inputs: list[TensorIn] | None = Field(default=None, max_length=64)
    #: test-only hooks (sleep / crash in the job subprocess); rejected unless the agent runs
    #: with AUTOTUNE_AGENT_TEST_HOOKS=1
    test: dict[str, Scalar] | None = Field(default=None, max_length=16)


class JobCreated(_Strict):
    job_id: str
    status: JobStatusName
    #: True when an identical job was already queued or running: this is its id
    coalesced: bool = False


class JobView(_Strict):
    """``GET /v1/jobs/{id}``: where a job is, and its Measurement once it has one."""

    job_id: str
    status: JobStatusName
    model_sha256: str
    backend: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    queue_position: int | None = None
    phases: dict[str, float] = Field(default_factory=dict, description="seconds per phase")
    error: str | None = None
    submissions: int = 1
    measurement: dict[str, Any] | None = None


class ModelStored(_Strict):
    sha256: str
    size: int
    created: bool


class BackendInfo(_Strict):
    available: bool
    reason: str = ""
    fingerprint: dict[str, Any] = Field(default_factory=dict)


class QueueInfo(_Strict):
    depth: int
    running: str | None
    max_queue: int
    completed: int
    failed: int
    coalesced: int


class InfoResponse(_Strict):
    """``GET /v1/info``."""

    protocol: int
    agent_version: str
    instance_id: str
    hostname: str
    auth: Literal["bearer", "none"]
    fingerprint: dict[str, Any]
    backends: dict[str, BackendInfo]
    queue: QueueInfo
    health: dict[str, Any]
    limits: dict[str, Any]
    test_hooks: bool = False


class AgentError(Exception):
    """An error answer: HTTP status, a code from :mod:`autotune.agent.schemas`, one line."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers
