"""What every backend measuring on one CUDA GPU shares: its lock, its fingerprint, and how its
results are stamped. The backends differ only in what runs the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotune._util import cache_root, error_line
from autotune.devices import _cuda
from autotune.devices._base import Device, Measurement, RuntimeOptions
from autotune.devices._fingerprint import host_fingerprint
from autotune.devices._onnx_info import OnnxTraits, analyse


def default_cache_dir() -> Path:
    """Engine and timing caches (see :func:`autotune._util.cache_root`)."""
    return cache_root()


class CudaDevice(Device):
    device_id: int = 0

    @property
    def lock_name(self) -> str:
        return f"cuda{self.device_id}"

    def runtime_versions(self) -> dict[str, Any]:
        """Versions of what runs the model (part of the fingerprint)."""
        return {}

    def fingerprint(self) -> dict[str, Any]:
        return {
            **host_fingerprint(),
            **_cuda.gpu_info(self.device_id),
            "backend": self.backend,
            **self.runtime_versions(),
        }

    def inspect(self, model_path: Path) -> OnnxTraits | Measurement:
        """The artifact's traits (precisions, QDQ, 2:4 weights), or ``invalid_model``."""
        try:
            return analyse(model_path)
        except Exception as exc:  # noqa: BLE001 - an unreadable model is a result
            return Measurement(
                status="invalid_model", backend=self.backend, error=error_line(exc, with_type=False)
            )

    def stamp(self, m: Measurement, runtime: RuntimeOptions, lock_wait_s: float, **extra: Any) -> Measurement:
        """Attach runtime options, fingerprint and GPU state to a finished measurement."""
        m.runtime = runtime.to_dict()
        m.fingerprint = self.fingerprint()
        m.extra.update(gpu_state=_cuda.gpu_state(self.device_id), lock_wait_s=round(lock_wait_s, 3), **extra)
        return m
