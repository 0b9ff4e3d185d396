"""TensorRT helpers without a GPU: the cuda-python shim, the build plan and the engine key."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from autotune.devices._onnx_info import OnnxTraits
from autotune.records import RuntimeOptions

__all__ = ["_atomic_write", "_check", "_cudart", "build_plan", "engine_key"]


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
    return cudart


def _check(result: Any) -> Any:
    """cuda-python returns (err, *values): raise on error, return the value(s)."""
    cudart = _cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA error: {cudart.cudaGetErrorString(err)[1].decode()}")
    return values[0] if len(values) == 1 else values or None


def build_plan(
    traits: OnnxTraits, runtime: RuntimeOptions, compute_capability: tuple[int, int]
) -> dict[str, Any]:
    """The builder flags an artifact needs (pure: tested without a GPU)."""
    fp16 = runtime.precision == "fp16" or traits.fp16
    return {
        "fp16": fp16,
        "int8": traits.qdq,
        "sparse_weights": bool(traits.sparse_2_4) and compute_capability >= (8, 0),
        # the artifact's fp32 layers stay fp32 when only some layers were asked to be fp16
        "pin_fp32_layers": traits.fp16 and runtime.precision != "fp16",
    }


def engine_key(
    model_sha256: str, plan: dict[str, Any], shapes: dict[str, tuple[int, ...]], stack: dict[str, Any]
) -> str:
    """Engine cache key: the model, the flags, the shapes and the TensorRT/GPU stack."""
    blob = json.dumps({"model": model_sha256, "plan": plan, "shapes": shapes, "stack": stack}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(f"{path.suffix}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
