"""The job validator: everything a ``POST /v1/jobs`` body must satisfy before it is queued.

The schema (:mod:`autotune.agent.schemas`) checks shapes and types; this checks the request
against what this agent offers and allows (backends, uploaded models, runtime and protocol
fields, threads, input sizes), and turns it into the job subprocess's spec.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin, get_type_hints

from autotune.agent.schemas import AgentError, JobRequest, TensorIn
from autotune.records import RuntimeOptions

if TYPE_CHECKING:
    from autotune.agent.config import AgentConfig
    from autotune.agent.state import Agent

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


_CHUNK = 1 << 20  # base64 characters decoded at a time (a multiple of 4)


def _decoded_size_and_sha256(data: str) -> tuple[int, str]:
    """Size and sha256 of what ``data`` decodes to, without holding the decoded bytes at once.

    ValueError (binascii.Error) when it is not strict base64 (padding only at the very end)."""
    h = hashlib.sha256()
    size = 0
    for start in range(0, len(data), _CHUNK):
        piece = data[start : start + _CHUNK]
        if "=" in piece and start + _CHUNK < len(data):
            raise ValueError("padding inside the data")
        raw = base64.b64decode(piece, validate=True)
        size += len(raw)
        h.update(raw)
    return size, h.hexdigest()


#: protocol fields that count something
_INTEGER_FIELDS = frozenset({"warmup_runs", "min_samples", "max_retries"})
_DEFAULT_BOUND = 1e6


def protocol_bounds(cfg: AgentConfig) -> dict[str, float]:
    """The largest value this agent accepts for each ``Protocol`` field (also in ``/v1/info``).

    Times are bounded by the measure phase's timeout: a protocol that cannot finish within it
    would only end as ``timeout``.
    """
    t = cfg.measure_timeout_s
    return {
        "warmup_s": t,
        "warmup_runs": 100_000,
        "min_samples": 100_000,
        "min_time_s": t,
        "max_time_s": t,
        "min_sample_ms": 10_000.0,
        "unstable_iqr": 10.0,
        "max_retries": 10,
        "min_cpu_share": 1.0,
    }


@cache
def runtime_choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of every enumerated :class:`RuntimeOptions` field (its ``Literal``)."""
    hints = get_type_hints(RuntimeOptions)
    return {name: get_args(t) for name, t in hints.items() if get_origin(t) is Literal}


def usable_cores() -> list[int]:
    """The CPU cores a job may be pinned to: those this agent may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def runtime_bounds(cfg: AgentConfig) -> dict[str, Any]:
    """What this agent accepts for each ``RuntimeOptions`` field (also in ``/v1/info``)."""
    return {"threads": [1, cfg.max_threads], "affinity": usable_cores(), **runtime_choices()}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_options(agent: Agent, options: dict[str, Any]) -> None:
    """Every runtime option against its type in :class:`RuntimeOptions`, before queueing: a value
    the job process would only trip over (``KeyError``, ``sched_setaffinity``) is a 400 here."""
    unknown = set(options) - agent.runtime_fields
    if unknown:
        raise AgentError(
            400,
            "bad_request",
            f"unknown runtime options {sorted(unknown)[:10]}; known: {sorted(agent.runtime_fields)}",
        )
    threads = options.get("threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= agent.cfg.max_threads:
        raise AgentError(
            400,
            "bad_request",
            f"threads must be an integer in 1..{agent.cfg.max_threads}, got {_short(threads)}",
        )
    choices = runtime_choices()
    for name, value in options.items():
        if name == "threads":
            continue
        if name == "affinity":
            _check_affinity(value)
        elif name in choices:
            if value not in choices[name] or isinstance(value, bool):
                allowed = list(choices[name])
                raise AgentError(
                    400, "bad_request", f"options.{name} must be one of {allowed}, got {_short(value)}"
                )
        else:  # a field this agent does not know how to check: refused, not passed on unchecked
            raise AgentError(400, "bad_request", f"options.{name} cannot be checked by this agent")


def _check_affinity(value: Any) -> None:
    if value is None:
        return
    cores = usable_cores()
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= len(cores)
        or not all(isinstance(c, int) and not isinstance(c, bool) for c in value)
        or len(set(value)) != len(value)
        or not set(value) <= set(cores)
    ):
        raise AgentError(
            400,
            "bad_request",
            f"options.affinity must be null or distinct CPU cores of this agent ({_ranges(cores)}), "
            f"got {_short(value)}",
        )


def _ranges(cores: list[int]) -> str:
    """``0-3,6``: a short form of a sorted core list."""
    spans: list[list[int]] = []
    for c in cores:
        if spans and spans[-1][1] == c - 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _checked_inputs(agent: Agent, tensors: list[TensorIn], total: int) -> tuple[list[Any], int]:
    """Each tensor's [name, dtype, shape, sha256] after checking it; the running byte total."""
    digests = []
    names = set()
    for t in tensors:
        if t.name in names:
            raise AgentError(400, "bad_request", f"input {t.name!r} given twice")
        names.add(t.name)
        if any(d < 0 for d in t.shape):
            raise AgentError(400, "bad_request", f"input {t.name!r}: negative dimension in {t.shape}")
        try:
            size, digest = _decoded_size_and_sha256(t.data)
        except (binascii.Error, ValueError):
            raise AgentError(400, "bad_request", f"input {t.name!r}: data is not base64") from None
        expected = math.prod(t.shape) * _ITEMSIZE[t.dtype]
        if size != expected:
            raise AgentError(
                400,
                "bad_request",
                f"input {t.name!r}: {size} bytes, shape {t.shape} {t.dtype} needs {expected}",
            )
        total += size
        if total > agent.cfg.max_input_bytes:
            raise AgentError(
                413, "too_large", f"inputs exceed the agent's cap of {agent.cfg.max_input_bytes} bytes"
            )
        digests.append([t.name, t.dtype, list(t.shape), digest])
    return digests, total


def prepare_job(agent: Agent, req: JobRequest) -> tuple[str, dict[str, Any], dict[str, float], int]:
    """Check a job request; return its coalescing key, the subprocess spec, timeouts, and the
    bytes its inputs hold while it waits (base64 text)."""
    b = agent.backends.get(req.backend)
    if b is None or not b.available:
        usable = ", ".join(n for n, i in agent.backends.items() if i.available) or "none"
        why = f" ({b.reason})" if b is not None and b.reason else ""
        raise AgentError(
            400, "bad_request", f"backend {req.backend!r} is not available here{why}; usable: {usable}"
        )
    for sha in (req.model_sha256, req.reference_sha256):
        if sha is not None and not agent.store.has(sha):
            raise AgentError(
                409, "unknown_model", f"model {sha} is not uploaded; PUT /v1/models/{{sha256}} first"
            )
    _check_options(agent, req.options)
    unknown = set(req.protocol) - agent.protocol_fields
    if unknown:
        raise AgentError(
            400,
            "bad_request",
            f"unknown protocol fields {sorted(unknown)[:10]}; known: {sorted(agent.protocol_fields)}",
        )
    bounds = protocol_bounds(agent.cfg)
    for k, v in req.protocol.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise AgentError(
                400, "bad_request", f"protocol.{k} must be a non-negative number, got {_short(v)}"
            )
        if k in _INTEGER_FIELDS and not float(v).is_integer():
            raise AgentError(400, "bad_request", f"protocol.{k} must be an integer, got {_short(v)}")
        if v > bounds.get(k, _DEFAULT_BOUND):
            raise AgentError(
                400,
                "bad_request",
                f"protocol.{k} = {v!r} is over this agent's bound of {bounds.get(k, _DEFAULT_BOUND):g}",
            )
    if req.test is not None and not agent.cfg.test_hooks:
        raise AgentError(400, "bad_request", "test hooks are disabled on this agent")
    digests, total = _checked_inputs(agent, req.inputs, 0)
    ref_digests = None
    if req.reference_inputs is not None:
        ref_digests, total = _checked_inputs(agent, req.reference_inputs, total)
    identity = {
        "model": req.model_sha256,
        "backend": req.backend,
        "options": req.options,
        "protocol": req.protocol,
        "inputs": digests,
        "test": req.test,
    }
    if req.reference_sha256 is not None:  # a paired job is another job (and coalesces as one)
        identity["reference"] = [req.reference_sha256, ref_digests]
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    spec: dict[str, Any] = {
        "model_path": str(agent.store.path(req.model_sha256)),
        "backend": req.backend,
        "options": req.options,
        "protocol": req.protocol,
        # the request's own strings, not copies: a queued job holds its inputs once
        "inputs": [
            {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "data": t.data} for t in req.inputs
        ],
        "test": req.test,
    }
    if req.reference_sha256 is not None:
        spec["reference_sha256"] = req.reference_sha256
        spec["reference_path"] = str(agent.store.path(req.reference_sha256))
        if req.reference_inputs is not None:
            spec["reference_inputs"] = [
                {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "data": t.data}
                for t in req.reference_inputs
            ]
    caps = {
        "startup": agent.cfg.startup_timeout_s,
        "prepare": agent.cfg.prepare_timeout_s,
        "measure": agent.cfg.measure_timeout_s,
    }
    asked = {
        "startup": req.timeouts.startup_s,
        "prepare": req.timeouts.prepare_s,
        "measure": req.timeouts.measure_s,
    }
    timeouts = {k: min(cap, asked[k] or cap) for k, cap in caps.items()}
    # waiting for a device another process measures on ends with its own reason, well before
    # the measure phase's timeout would
    spec["lock_timeout_s"] = min(agent.cfg.lock_timeout_s, timeouts["measure"] / 2)
    held = sum(len(t.data) for t in [*req.inputs, *(req.reference_inputs or [])])
    return key, spec, timeouts, held
