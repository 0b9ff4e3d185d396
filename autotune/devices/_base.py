"""The Device interface and the typed records every backend returns.

A Device measures the latency of one ONNX artifact under explicit runtime options, following
the protocol in :mod:`autotune.devices._protocol`. Results are typed records with a status,
never sentinel numbers.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

Status = Literal[
    "ok",
    "unstable",
    "invalid_model",
    "build_error",
    "runtime_error",
    "oom",
    "timeout",
    "cancelled",
]


@dataclass(frozen=True)
class RuntimeOptions:
    """Session options that change latency: part of the measurement cache key."""

    threads: int = 1
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    affinity: tuple[int, ...] | None = None  # CPU cores to pin the measuring process to
    precision: Literal["fp32", "fp16"] = "fp32"  # GPU backends: build precision

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["affinity"] = list(self.affinity) if self.affinity is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeOptions:
        d = dict(d)
        if d.get("affinity") is not None:
            d["affinity"] = tuple(d["affinity"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Protocol:
    """How long and how often to measure (DESIGN.md, measurement protocol)."""

    warmup_s: float = 1.0  # warm up for at least this long ...
    warmup_runs: int = 10  # ... and at least this many runs
    min_samples: int = 64  # stop only when both min_samples and min_time_s are reached
    min_time_s: float = 1.0
    max_time_s: float = 30.0  # hard cap on the steady-state phase
    min_sample_ms: float = 1.0  # runs are batched into one sample when a run is shorter
    unstable_iqr: float = 0.10  # IQR / median above this -> retry, then flag "unstable"
    max_retries: int = 2
    # single-threaded CPU runs: the measuring thread getting less of a core than this (others
    # competed for it) -> retry, then flag "unstable"; 0 disables the check
    min_cpu_share: float = 0.90

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def quick(cls) -> Protocol:
        """A short protocol for tests and smoke runs (still stops on both thresholds)."""
        return cls(warmup_s=0.05, warmup_runs=3, min_samples=16, min_time_s=0.05, max_retries=0)


@dataclass
class Measurement:
    """Latency statistics of one artifact on one device (milliseconds per run)."""

    status: Status
    backend: str
    n: int = 0
    median_ms: float = float("nan")
    mean_ms: float = float("nan")
    min_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    iqr_ms: float = float("nan")
    cv: float = float("nan")
    runs_per_sample: int = 1
    samples_ms: list[float] = field(default_factory=list)
    load_ms: float = float("nan")  # session creation / engine build
    first_run_ms: float = float("nan")
    steady_s: float = 0.0  # wall time of the steady-state phase (all attempts)
    retries: int = 0
    error: str | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    drift_ratio: float | None = None  # canary latency now / canary latency at start
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # backend specific (e.g. GPU compute time)

    @property
    def usable(self) -> bool:
        """Numbers exist (ok or unstable); an unstable one is still flagged to the user."""
        return self.status in ("ok", "unstable") and self.n > 0

    def to_dict(self, max_samples: int | None = None) -> dict[str, Any]:
        d = asdict(self)
        if max_samples is not None and len(self.samples_ms) > max_samples:
            # keep the distribution's shape: evenly spaced order statistics
            idx = np.linspace(0, len(self.samples_ms) - 1, max_samples).round().astype(int)
            d["samples_ms"] = [float(v) for v in np.sort(self.samples_ms)[idx]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def summary(self) -> str:
        if not self.usable:
            return f"{self.status}: {self.error or ''}".strip()
        return (
            f"median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f} ms, "
            f"CV {self.cv:.1%}, n={self.n} ({self.status})"
        )


@dataclass(frozen=True)
class Capabilities:
    """What a backend measures, and which knob values it makes real (i.e. faster or smaller).

    ``autotune devices`` prints this and checks device profiles against it: a profile that
    lists a knob value its backend does not make real wastes trials.
    """

    measures: str  # what the reported latency is, in one line
    bits: tuple[int, ...] = (32,)
    sparsity: tuple[float | str, ...] = (0.0,)
    precisions: tuple[str, ...] = ("fp32",)  # RuntimeOptions.precision values honoured
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Device(abc.ABC):
    """A place where latency is measured. One file per backend implements this.

    A backend times load and first run itself and hands one inference (``run()``) to
    :func:`autotune.devices._protocol.run_protocol`, inside :func:`autotune.devices._lock.device_lock`;
    a remote agent calls the same ``measure`` in a job subprocess on the device.

    Example::

        from pathlib import Path
        import numpy as np
        from autotune.devices import OrtCpuDevice, Protocol, RuntimeOptions

        m = OrtCpuDevice().measure(Path("model.onnx"), {"input": np.zeros((1, 3), np.float32)},
                                   RuntimeOptions(threads=1), Protocol())
        print(m.status, m.median_ms)
    """

    #: backend id used in device profiles ("ort-cpu", "tensorrt", "remote", ...)
    backend: str = ""
    #: what this backend measures and which knob values are real on it
    capabilities: ClassVar[Capabilities] = Capabilities(measures="latency")

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether this backend can run here, and why not. Never raises, never needs a GPU."""
        return True, ""

    @property
    def lock_name(self) -> str:
        """Measurements that share this name never run at the same time (one per device)."""
        return self.backend

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the hardware and software stack (part of the cache key)."""

    @abc.abstractmethod
    def measure(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        """Measure ``model_path`` fed with ``inputs``. Failures come back as a status."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (sessions, connections)."""
