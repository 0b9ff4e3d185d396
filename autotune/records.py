"""The typed records of a measurement: status, runtime options, protocol, statistics.

They need numpy only, so every side imports them: the search, each device backend, the agent
and its job subprocess (which must not load torch or a GPU runtime to read a request).
Results are typed records with a status, never sentinel numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
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
    # a ratio is timed in at least ``sessions`` independent pairs of sessions (both re-created;
    # one session keeps its own speed for its life: docs/measurement.md, "Sessions") ...
    sessions: int = 3
    # ... adding sessions up to ``max_sessions`` until the interval over them is within
    # +-session_resolution of the ratio; wider -> "unstable". Each session warms up for
    # session_warmup_s and times pairs for session_pair_time_s (1 session: the fields above)
    max_sessions: int = 6
    session_resolution: float = 0.02
    session_pair_time_s: float = 1.0
    session_warmup_s: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def quick(cls) -> Protocol:
        """A short protocol for tests and smoke runs (still stops on both thresholds)."""
        return cls(
            warmup_s=0.05,
            warmup_runs=3,
            min_samples=16,
            min_time_s=0.05,
            max_retries=0,
            pair_min_time_s=0.05,
            sessions=1,
            max_sessions=1,
        )


def _float(v: Any) -> float:
    """A stored float; JSON null (a NaN sent over the wire, :func:`autotune.wire.json_safe`) -> NaN."""
    return math.nan if v is None else float(v)


@dataclass(frozen=True)
class LatencyStats:
    """Order statistics of per-run latencies (ms), as ``devices.summarize`` computes them."""

    median_ms: float = math.nan
    mean_ms: float = math.nan
    min_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    iqr_ms: float = math.nan
    cv: float = math.nan
    n: int | None = None  # None where the samples are counted elsewhere (a paired reference's)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.n is None:
            del d["n"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyStats:
        floats = {f.name for f in fields(cls) if f.name != "n"}
        n = d.get("n")
        return cls(**{k: _float(v) for k, v in d.items() if k in floats}, n=None if n is None else int(n))


@dataclass(frozen=True)
class LoadShares:
    """What else ran on the host while measuring, as shares of all logical cores."""

    foreign_cpu: float = 0.0  # CPU time of other processes
    steal: float = 0.0  # time the hypervisor gave to other VMs
    own_cpu: float = 0.0  # this process's CPU time per wall second
    wall_s: float = 0.0

    @property
    def busy(self) -> float:
        """The share taken from the measurement: other processes plus steal."""
        return self.foreign_cpu + self.steal

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadShares:
        return cls(**{k: float(v) for k, v in d.items() if k in cls.__dataclass_fields__ and v is not None})


#: the typed fields of a Measurement stored inside ``extra``, under the keys earlier versions wrote
#: there (field name -> key): stored studies, cached measurements and agents of either version
#: read each other (the field holds its default: the key is left out, as before)
_IN_EXTRA: dict[str, str] = {
    "drift_flag": "drift_flag",
    "host_busy": "host_busy",
    "host_load": "host_load",
    "unstable_reason": "unstable_reason",
    "interleaved": "paired",
    "warmup_s": "warmup_s",
    "warmup_runs": "warmup_runs",
    "cpu_share_attempts": "cpu_share_attempts",
    "reference_stats": "reference_stats",
    "provider_options": "provider_options",
    "gpu_compute": "gpu_compute",
    "host_io_ms": "host_io_ms",
    "h2d_ms": "h2d_ms",
    "d2h_ms": "d2h_ms",
    "cuda_graph": "cuda_graph",
    "ratio_ci_within": "ratio_ci_within",
    "session_ratios": "session_ratios",
}


@dataclass
class Measurement:
    """Latency statistics of one artifact on one device (milliseconds per run).

    What a later stage reads back (flags, the figures the reports print) are typed fields;
    ``extra`` holds the backend's other diagnostics, stored and shown but never decided on.
    """

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
    extra: dict[str, Any] = field(default_factory=dict)  # backend diagnostics, for people to read
    # paired timing (docs/measurement.md): the candidate interleaved with a reference artifact in
    # one session; the statistics above are the candidate's, n counts pairs
    ratio: float | None = None  # median of per-pair candidate / reference
    # [low, high] 95% interval of the ratio: over sessions when several were timed
    # (``session_ratios``), else the one session's order-statistic interval of its median
    ratio_ci: list[float] | None = None
    reference_sha256: str | None = None
    reference_median_ms: float | None = None
    # -- read back by later stages; stored in ``extra`` (see _IN_EXTRA) -------------------------
    drift_flag: bool = False  # the drift canary moved beyond the measurer's threshold
    host_busy: float | None = None  # share of the CPUs other work took, set above HOST_BUSY_SHARE
    host_load: LoadShares | None = None  # what else ran while measuring (CPU backends)
    unstable_reason: str | None = None  # why the status is "unstable"
    #: ratio timing: True candidate and reference interleaved in one session, False measured
    #: apart (a backend without paired timing), None unpaired (stored as ``paired``)
    interleaved: bool | None = None
    warmup_s: float | None = None
    warmup_runs: int | None = None
    cpu_share_attempts: list[float] | None = None  # share of a core the timing thread got, per try
    reference_stats: LatencyStats | None = None  # the paired reference's statistics in its window
    provider_options: dict[str, str] | None = None  # GPU execution provider options, as measured
    gpu_compute: LatencyStats | None = None  # GPU compute time of the steady-state runs (TensorRT)
    host_io_ms: float | None = None  # GPU backends: latency with the host copies ...
    h2d_ms: float | None = None  # ... and its parts (TensorRT)
    d2h_ms: float | None = None
    cuda_graph: str | None = None  # torch-cuda: "captured", "disabled", or why not
    ratio_ci_within: list[float] | None = None  # one session's own interval (the first one's)
    session_ratios: list[float] | None = None  # the ratio of each independent session

    @property
    def usable(self) -> bool:
        """Numbers exist (ok or unstable); an unstable one is still flagged to the user."""
        return self.status in USABLE_STATUSES and self.n > 0

    def to_dict(self, max_samples: int | None = None) -> dict[str, Any]:
        """The stored and wire form: the typed fields of _IN_EXTRA go inside ``extra``."""
        d = asdict(self)
        if max_samples is not None and len(self.samples_ms) > max_samples:
            # keep the distribution's shape: evenly spaced order statistics
            idx = np.linspace(0, len(self.samples_ms) - 1, max_samples).round().astype(int)
            d["samples_ms"] = [float(v) for v in np.sort(self.samples_ms)[idx]]
        for name, key in _IN_EXTRA.items():
            stored, value = d.pop(name), getattr(self, name)
            if value != _DEFAULTS[name]:
                d["extra"][key] = value.to_dict() if isinstance(value, (LatencyStats, LoadShares)) else stored
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        """The inverse of :meth:`to_dict`, for measurements of this version and earlier ones."""
        kwargs = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        extra = dict(kwargs.get("extra") or {})
        for name, key in _IN_EXTRA.items():
            if key in extra:
                kwargs[name] = extra.pop(key)
            if name in kwargs:
                kwargs[name] = _typed(name, kwargs[name])
        kwargs["extra"] = extra
        return cls(**kwargs)

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
            f"in-window median {self.median_ms:.3f} ms, p90 {self.p90_ms:.3f} ms, "
            f"CV {self.cv:.1%}, n={self.n} ({self.status})"
        )
        if self.ratio is not None and self.ratio_ci:
            text += (
                f"; x{self.ratio:.3f} [{self.ratio_ci[0]:.3f}, {self.ratio_ci[1]:.3f}] "
                f"of the reference ({self.reference_median_ms:.3f} ms in-window)"
            )
        return text


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Measurement) if f.name in _IN_EXTRA}


def _typed(name: str, value: Any) -> Any:
    """A stored value (JSON) as its typed field holds it."""
    if value is None:
        return _DEFAULTS[name]
    if name == "host_load" and isinstance(value, dict):
        return LoadShares.from_dict(value)
    if name in ("reference_stats", "gpu_compute") and isinstance(value, dict):
        return LatencyStats.from_dict(value)
    if name in ("cpu_share_attempts", "ratio_ci_within", "session_ratios"):
        return [float(v) for v in value]
    return value
