"""What a run stores, typed: the run's metadata and each trial's record, and the run's file names.

Optuna keeps both as JSON user attributes (the study's under :data:`META_KEY`, each trial's as its
own keys). These two dataclasses are the only code that knows those keys, the way
``Measurement.to_dict`` / ``from_dict`` is for a measurement; the search writes them, the result
and the report read them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import optuna

from autotune.records import Measurement
from autotune.space import Candidate

META_KEY = "autotune"  # study user attribute holding the run's metadata
DB_NAME = "study.db"  # the Optuna SQLite database in runs/<study>/
FAILURES_DIR = "failures"  # runs/<study>/failures/<trial>.txt: full tracebacks of failed candidates
MAX_STORED_SAMPLES = 256  # latency samples kept per trial, for the report's distributions


@dataclass
class RunMeta:
    """The run: task, device, budget, protocol and space, written when the study is created."""

    task: str = "?"
    metric: str = "accuracy"
    device: str = "?"
    backend: str = "?"
    budget_ms: float = math.inf
    budget: str = "?"  # as the user reads it, e.g. "0.6ms"
    budget_fraction: float | None = None  # a relative budget (50% -> 0.5): decided on the ratio
    run_dir: str = "."
    fingerprint: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)  # SearchSpace.summary()
    protocol: dict[str, Any] = field(default_factory=dict)  # Protocol.to_dict()
    created: str = "?"
    command: str = "?"
    version: str = "?"
    wall_s: float = 0.0  # summed over every run of the study
    measurer: dict[str, int] = field(default_factory=dict)  # the latest run's measurer counts
    sensitivity: dict[str, Any] | None = None  # per-layer sensitivity, when computed
    #: the unmodified model on this device (guide.Reference.to_dict()), always measured first
    reference: dict[str, Any] | None = None
    floor: float | None = None  # lowest acceptable score (--max-drop), None: no floor
    max_drop: str | None = None  # as the user gave it, e.g. "1 points" or "1%"
    infeasible: str | None = None  # the feasibility probe's verdict when the budget is out of reach
    stopped: str | None = None  # why the latest run ended early (timeout, infeasible, interrupted)
    search: dict[str, Any] = field(default_factory=dict)  # sampler, recovery, sensitivity options

    @property
    def notes(self) -> list[str]:
        """What the search left out and why."""
        return list(self.space.get("notes", []))

    def to_attrs(self) -> dict[str, Any]:
        attrs = asdict(self)
        attrs["last_run"] = {"measurer": attrs.pop("measurer")}
        for key in ("sensitivity", "reference", "floor", "max_drop", "infeasible", "stopped"):
            if attrs[key] is None:
                del attrs[key]
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> RunMeta:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in attrs.items() if k in known}
        kwargs["measurer"] = dict(attrs.get("last_run", {}).get("measurer", {}))
        return cls(**kwargs)

    @classmethod
    def from_study(cls, study: optuna.Study) -> RunMeta | None:
        """The study's metadata; None when autotune did not create the study."""
        attrs = study.user_attrs.get(META_KEY)
        return cls.from_attrs(attrs) if attrs else None

    def save(self, study: optuna.Study) -> None:
        study.set_user_attr(META_KEY, self.to_attrs())


#: TrialRecord fields stored as they are, under their own name
_PLAIN_KEYS = (
    "baseline",
    "fail_stage",
    "fail_reason",
    "traceback",
    "sensitivity",
    "recovery",
    "peak_memory_bytes",
    "precision",
)


@dataclass
class TrialRecord:
    """What autotune stores with one trial; every field is optional, set as the trial goes."""

    candidate: Candidate | None = None
    artifact_path: str | None = None  # relative to the run directory
    sha256: str | None = None
    size_bytes: int | None = None
    measurement: Measurement | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    baseline: str | None = None  # name of the baseline this trial was enqueued as
    fail_stage: str | None = None
    fail_reason: str | None = None  # one line, for the summary
    traceback: str | None = None  # the failure's full traceback file, relative to the run directory
    sensitivity: dict[str, Any] | None = None
    #: recovery that ran ("bn", "kd", "finetune") and the accuracy of the same candidate before it
    recovery: dict[str, Any] | None = None
    #: the search process's peak resident memory during the trial (build, measure, evaluate)
    peak_memory_bytes: int | None = None
    #: layer -> the precision onnxruntime's CPU provider runs it in ("int8", "fp32", ...), read
    #: off its optimised graph (devices/_ort_graph.py); None where not inspected
    precision: dict[str, str] | None = None

    @property
    def failed_by_candidate(self) -> bool:
        """The candidate failed (a reason was recorded), as opposed to a killed worker."""
        return self.fail_reason is not None

    def to_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if self.candidate is not None:
            attrs["config"] = self.candidate.to_dict()
        if self.artifact_path is not None:
            attrs["artifact"] = {
                "path": self.artifact_path,
                "sha256": self.sha256,
                "size_bytes": self.size_bytes,
            }
        if self.measurement is not None:
            attrs["measurement"] = self.measurement.to_dict(max_samples=MAX_STORED_SAMPLES)
        if self.timings:
            attrs["timings"] = dict(self.timings)
        for key in _PLAIN_KEYS:
            if getattr(self, key) is not None:
                attrs[key] = getattr(self, key)
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        artifact = attrs.get("artifact") or {}
        return cls(
            candidate=Candidate.from_dict(attrs["config"]) if "config" in attrs else None,
            artifact_path=artifact.get("path"),
            sha256=artifact.get("sha256"),
            size_bytes=artifact.get("size_bytes"),
            measurement=Measurement.from_dict(attrs["measurement"]) if "measurement" in attrs else None,
            timings=dict(attrs.get("timings", {})),
            baseline=attrs.get("baseline"),
            fail_stage=attrs.get("fail_stage"),
            fail_reason=attrs.get("fail_reason"),
            traceback=attrs.get("traceback"),
            sensitivity=attrs.get("sensitivity"),
            recovery=attrs.get("recovery"),
            peak_memory_bytes=attrs.get("peak_memory_bytes"),
            precision=attrs.get("precision"),
        )

    def save(self, trial: optuna.Trial) -> None:
        for key, value in self.to_attrs().items():
            trial.set_user_attr(key, value)
