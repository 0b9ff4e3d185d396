"""What a run stores in its Optuna study, typed; the one module that knows the stored keys.

Optuna keeps autotune's records as JSON user attributes: the study's (the run's metadata under
:data:`META_KEY`, the confirmation round under :data:`CONFIRMED_KEY`, a distributed study's
settings under :data:`SETTINGS_KEY`) and each trial's (its candidate, artifact, measurement,
baseline, failure, prediction, worker and surplus mark, :meth:`TrialRecord.to_attrs`). A file in
the study's artifact store is linked to a trial by a system attribute in the format of
``optuna.artifacts`` (:func:`link_artifact`).
Every one of those keys is read and written here and nowhere else, the way
``Measurement.to_dict`` / ``from_dict`` is for a measurement; the search writes these records,
the result and the report read them (tests/test_records.py checks that no other module touches
``user_attrs``).

Why here, in the study stage: it is the first stage that has an Optuna study. The records hold
what earlier stages make (a :class:`~autotune.space.Candidate`, a
:class:`~autotune.records.Measurement`), and every reader of a study (tune, result, report)
comes later. The confirmation round (:mod:`autotune.measure.confirm`) only computes figures: it
never sees a study, and storing them is here too. The root stage (``autotune.records``) could not
hold these records: it must not import optuna or a Candidate (the agent imports it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial

from autotune.records import Measurement
from autotune.space import Candidate

META_KEY = "autotune"  # study user attribute holding the run's metadata
CONFIRMED_KEY = "confirmed"  # study user attribute: the confirmation round's figures, by trial number
PREDICTED_KEY = "predicted"  # trial user attribute of a candidate the predictor skipped: its figure
PREDICTION_KEY = "predicted_ratio"  # trial user attribute: the ratio predicted before it was measured
SETTINGS_KEY = "autotune:settings"  # study user attribute: what a worker joins with (StudySettings)
SURPLUS_KEY = "surplus"  # trial user attribute of a trial started after every slot was claimed
WORKER_KEY = "worker"  # trial user attribute: the worker that ran the trial (host:pid)
#: the trial system attribute prefix under which optuna.artifacts links a file to a trial (the
#: format upload_artifact writes; tests/test_distributed.py checks get_all_artifact_meta reads it)
ARTIFACT_LINK_PREFIX = "artifacts:"
DB_NAME = "study.db"  # the Optuna SQLite database in runs/<study>/
FAILURES_DIR = "failures"  # runs/<study>/failures/<trial>.txt: full tracebacks of failed candidates
MAX_STORED_SAMPLES = 256  # latency samples kept per trial, for the report's distributions

#: why a trial was enqueued rather than sampled: one of the space's uniform configurations or its
#: most aggressive one (what the feasibility probe measures), a greedy candidate from the
#: sensitivity table, or a final, longer recovery of an earlier trial
BaselineRole = Literal["uniform", "greedy", "final"]


@dataclass(frozen=True)
class Baseline:
    """A trial enqueued on purpose, and why.

    Stored as the trial's ``baseline`` name (what the summary, the report and the export show)
    and, for a final recovery, the number of the trial it recovers again (``final_of``). Every
    version wrote the role into the name's form (``greedy2``, ``final-kd#12``), so
    :meth:`stored` reads it back from there: the one place that does, beside the constructors
    that write it.
    """

    name: str
    role: BaselineRole
    final_of: int | None = None

    @classmethod
    def uniform(cls, name: str) -> Baseline:
        """One of ``SearchSpace.baselines()``, by its name there (``fp32``, ``w0.5+int8``, ``floor``)."""
        return cls(name, "uniform")

    @classmethod
    def greedy(cls, i: int) -> Baseline:
        """The ``i``-th greedy candidate of the sensitivity table (from 1)."""
        return cls(f"greedy{i}", "greedy")

    @classmethod
    def final(cls, number: int) -> Baseline:
        """Trial ``number`` built again with the final, longer distillation."""
        return cls(f"final-kd#{number}", "final", number)

    @classmethod
    def stored(cls, name: str | None, final_of: int | None) -> Baseline | None:
        """The baseline a trial's stored attributes describe; None for a sampled trial."""
        if final_of is not None:
            return cls(name or f"final-kd#{final_of}", "final", int(final_of))
        if name is None:
            return None
        return cls(name, "greedy" if name.startswith("greedy") else "uniform")


@dataclass
class Reference:
    """The unmodified model on the target device: what "Δ vs FP32" and relative budgets mean."""

    accuracy: float
    latency_ms: float
    sha256: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reference:
        return cls(float(d["accuracy"]), float(d["latency_ms"]), str(d["sha256"]), int(d["size_bytes"]))


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
    #: the unmodified model on this device (:meth:`Reference.to_dict`), always measured first
    reference: dict[str, Any] | None = None
    floor: float | None = None  # lowest acceptable score (--max-drop), None: no floor
    max_drop: str | None = None  # as the user gave it, e.g. "1 points" or "1%"
    infeasible: str | None = None  # the feasibility probe's verdict when the budget is out of reach
    stopped: str | None = None  # why the latest run ended early (timeout, infeasible, interrupted)
    search: dict[str, Any] = field(default_factory=dict)  # sampler, recovery, sensitivity options

    @property
    def reference_record(self) -> Reference | None:
        """:attr:`reference` typed (the dict stays: ``ParetoSet.meta.reference`` is public)."""
        return Reference.from_dict(self.reference) if self.reference else None

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
    "final_of",
    "final_time_s",
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
    final_of: int | None = None  # a final recovery: the trial it builds again (see Baseline)
    #: a final recovery: the seconds its distillation may take (study/_final.py)
    final_time_s: float | None = None
    #: skipped by the latency predictor (built, never measured): the predicted ratio and latency,
    #: the budget ratio, the margin and how many candidates it was trained on
    predicted: dict[str, Any] | None = None
    predicted_ratio: float | None = None  # measured anyway: what the predictor had said
    #: the search process's peak resident memory during the trial (build, measure, evaluate)
    peak_memory_bytes: int | None = None
    #: layer -> the precision onnxruntime's CPU provider runs it in ("int8", "fp32", ...), read
    #: off its optimised graph (devices/_ort_graph.py); None where not inspected
    precision: dict[str, str] | None = None
    worker: str | None = None  # the worker that ran it, host:pid (a retry names its own)
    #: started after every slot was claimed by other workers' trials: pruned, never counted
    #: (study/_slots.py)
    surplus: bool = False

    @property
    def failed_by_candidate(self) -> bool:
        """The candidate failed (a reason was recorded), as opposed to a killed worker."""
        return self.fail_reason is not None

    @property
    def enqueued(self) -> Baseline | None:
        """Why the trial was enqueued; None when the sampler proposed it."""
        return Baseline.stored(self.baseline, self.final_of)

    @classmethod
    def of_baseline(cls, baseline: Baseline) -> TrialRecord:
        """The record a baseline is enqueued with."""
        return cls(baseline=baseline.name, final_of=baseline.final_of)

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
        if self.predicted is not None:
            attrs[PREDICTED_KEY] = self.predicted
        if self.predicted_ratio is not None:
            attrs[PREDICTION_KEY] = self.predicted_ratio
        if self.worker is not None:
            attrs[WORKER_KEY] = self.worker
        if self.surplus:
            attrs[SURPLUS_KEY] = True
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        artifact = attrs.get("artifact") or {}
        final_of = attrs.get("final_of")
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
            final_of=None if final_of is None else int(final_of),
            final_time_s=attrs.get("final_time_s"),
            predicted=attrs.get(PREDICTED_KEY),
            predicted_ratio=attrs.get(PREDICTION_KEY),
            peak_memory_bytes=attrs.get("peak_memory_bytes"),
            precision=attrs.get("precision"),
            worker=attrs.get(WORKER_KEY),
            surplus=bool(attrs.get(SURPLUS_KEY, False)),
        )

    @classmethod
    def from_trial(cls, trial: FrozenTrial | optuna.Trial) -> TrialRecord:
        """The record of a stored trial, or of the running one (what it has stored so far)."""
        return cls.from_attrs(trial.user_attrs)

    def save(self, trial: optuna.Trial) -> None:
        for key, value in self.to_attrs().items():
            trial.set_user_attr(key, value)

    def enqueue(self, study: optuna.Study, params: dict[str, Any], skip_if_exists: bool) -> None:
        """Queue a trial of ``params`` that starts with this record (a baseline's)."""
        study.enqueue_trial(params, user_attrs=self.to_attrs(), skip_if_exists=skip_if_exists)


def enqueued_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters a trial was queued with (Optuna keeps them in a system attribute), else
    the ones it was sampled with."""
    return dict(trial.system_attrs.get("fixed_params", trial.params))


def load_confirmed(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The confirmation round's figures by trial number (:func:`autotune.measure.confirm.run_round`)."""
    stored = study.user_attrs.get(CONFIRMED_KEY, {})
    return {int(k): dict(v) for k, v in stored.items()}


def save_confirmed(study: optuna.Study, confirmed: Mapping[int, Mapping[str, Any]]) -> None:
    # JSON keys are strings: stored as "12", read back as 12
    study.set_user_attr(CONFIRMED_KEY, {str(k): dict(v) for k, v in confirmed.items()})


def load_settings(study: optuna.Study) -> dict[str, Any] | None:
    """A distributed study's settings as stored (:class:`~autotune.study.StudySettings` reads
    them); None when the study has none (created before them, or from Python)."""
    stored = study.user_attrs.get(SETTINGS_KEY)
    return dict(stored) if stored else None


def save_settings(study: optuna.Study, settings: Mapping[str, Any]) -> None:
    study.set_user_attr(SETTINGS_KEY, dict(settings))


def link_artifact(trial: optuna.Trial, artifact_id: str, filename: str, mimetype: str) -> None:
    """List a file already in the study's artifact store among ``trial``'s artifacts, as
    :func:`optuna.artifacts.upload_artifact` would (``get_all_artifact_meta`` and
    optuna-dashboard read it)."""
    meta = {"artifact_id": artifact_id, "filename": filename, "mimetype": mimetype, "encoding": None}
    trial.storage.set_trial_system_attr(trial._trial_id, ARTIFACT_LINK_PREFIX + artifact_id, json.dumps(meta))
