"""The typed records of a measurement: status, runtime options, protocol, statistics.

They need numpy only, so every side imports them: the search, each device backend, the agent
and its job subprocess (which must not load torch or a GPU runtime to read a request).
Results are typed records with a status, never sentinel numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

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
#: every status a measurement can end with (the agent adds "queued" and "running" for jobs)
STATUSES: tuple[str, ...] = get_args(Status)
#: statuses that carry latency numbers
USABLE_STATUSES = frozenset({"ok", "unstable"})


@dataclass(frozen=True)
class RuntimeOptions:
    """Session options that change latency: part of the measurement cache key."""

    threads: int = 1
    graph_optimization: Literal["all", "extended", "basic", "disable"] = "all"
    affinity: tuple[int, ...] | None = None  # CPU cores to pin the measuring process to
    precision: Literal["fp32", "fp16"] = "fp32"  # GPU backends: build precision
    # ORT_PARALLEL runs independent branches concurrently (inter-op pool of ``threads``)
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"  # CUDA EP

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["affinity"] = list(self.affinity) if self.affinity is not None else None
        # options added after v0.2 appear only when set: older cache keys and records stay valid
        for name, default in _LATER_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeOptions:
        d = dict(d)
        if d.get("affinity") is not None:
            d["affinity"] = tuple(d["affinity"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


_LATER_DEFAULTS = {"execution_mode": "sequential", "cudnn_conv_algo_search": "EXHAUSTIVE"}


@dataclass(frozen=True)
class Protocol:
    """How long and how often to measure (docs/measurement.md)."""

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
    # paired timing: candidate and reference alternate in blocks of about this long ...
    pair_block_ms: float = 1.0
    # ... for at least this long (a host whose speed shifts for seconds needs a few to show
    # its quiet moments, which the ratio is taken from: docs/measurement.md) ...
    pair_min_time_s: float = 3.0
    # ... and pairs are added (up to max_retries more rounds) until the ratio's 95% interval is
    # within +-this share of it; wider -> "unstable"
    ratio_resolution: float = 0.02

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def quick(cls) -> Protocol:
        """A short protocol for tests and smoke runs (still stops on both thresholds)."""
        return cls(
            warmup_s=0.05, warmup_runs=3, min_samples=16, min_time_s=0.05, max_retries=0, pair_min_time_s=0.05
        )


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
    # paired timing (docs/measurement.md): the candidate interleaved with a reference artifact in
    # one session; the statistics above are the candidate's, n counts pairs
    ratio: float | None = None  # median of per-pair candidate / reference
    ratio_ci: list[float] | None = None  # [low, high] 95% interval of that median
    reference_sha256: str | None = None
    reference_median_ms: float | None = None

    @property
    def usable(self) -> bool:
        """Numbers exist (ok or unstable); an unstable one is still flagged to the user."""
        return self.status in USABLE_STATUSES and self.n > 0

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

    @property
    def paired(self) -> bool:
        return self.ratio is not None

    @property
    def ratio_resolution(self) -> float:
        """Relative half-width of the ratio's interval: differences below it are noise."""
        if self.ratio is None or not self.ratio_ci:
            return float("nan")
        return (self.ratio_ci[1] - self.ratio_ci[0]) / 2 / self.ratio

    def summary(self) -> str:
        if not self.usable:
            return f"{self.status}: {self.error or ''}".strip()
        text = (
            f"median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f} ms, "
            f"CV {self.cv:.1%}, n={self.n} ({self.status})"
        )
        if self.ratio is not None and self.ratio_ci:
            text += (
                f"; x{self.ratio:.3f} [{self.ratio_ci[0]:.3f}, {self.ratio_ci[1]:.3f}] "
                f"of the reference ({self.reference_median_ms:.3f} ms)"
            )
        return text
