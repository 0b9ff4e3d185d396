"""The agent's wire format (protocol v1), shared by the agent and its client.

One home for what both halves must agree on: the protocol version, the token variable, the job
statuses and the tensor codec. Standard library and numpy only: the agent process imports this
without torch, onnxruntime or httpx.
"""

from __future__ import annotations

import base64
import math
from dataclasses import fields
from typing import Any, Literal

import numpy as np

from autotune.records import STATUSES, Measurement, Status

#: version of the HTTP protocol spoken under ``/v1``
PROTOCOL_VERSION = 1
#: environment variable holding the bearer token (agent and client)
TOKEN_ENV = "AUTOTUNE_AGENT_TOKEN"
DEFAULT_TOKEN_FILE = "~/.autotune-token"

#: a job's status: a measurement's status, or not finished yet
JobStatusName = Literal["queued", "running"] | Status
#: statuses after which a job never changes again
TERMINAL: frozenset[str] = frozenset(STATUSES)

#: dtypes an input tensor may have (raw little-endian bytes, never pickles)
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")

_FLOAT_FIELDS = {f.name for f in fields(Measurement) if isinstance(f.default, float)}


def encode_inputs(inputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Raw little-endian bytes, base64, with dtype and shape (the v1 wire form)."""
    out = []
    for name, arr in inputs.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        out.append(
            {
                "name": name,
                "dtype": str(a.dtype),
                "shape": list(a.shape),
                "data": base64.b64encode(a.tobytes()).decode("ascii"),
            }
        )
    return out


def decode_inputs(tensors: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The inverse of :func:`encode_inputs`; raises ValueError on malformed data."""
    out: dict[str, np.ndarray] = {}
    for t in tensors:
        raw = base64.b64decode(t["data"], validate=True)
        arr = np.frombuffer(raw, dtype=np.dtype(t["dtype"]).newbyteorder("<"))
        out[t["name"]] = arr.reshape(t["shape"]).astype(np.dtype(t["dtype"]), copy=True)
    return out


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON: measurements go over the wire this way)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def measurement_from_wire(d: dict[str, Any]) -> Measurement:
    """JSON null back to NaN for the float statistics."""
    d = {k: (float("nan") if k in _FLOAT_FIELDS and v is None else v) for k, v in d.items()}
    return Measurement.from_dict(d)
