"""Results: trials read back from the Optuna study, the Pareto set, export.

Everything here is rebuilt from storage, so a finished, interrupted or remote study reads the
same way: ``ParetoSet.load("runs/my-study")``. Artifacts and tracebacks another worker stored are
fetched from the study's artifact store (:class:`~autotune.study.Store`) when a file is needed:
``ParetoSet.load(storage=URL, study_name=NAME).best.export("best.onnx")`` works on any machine
that reaches the database and the store.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.budget import Limit, parse_floor_option
from autotune.errors import UserError
from autotune.knobs import export_fields
from autotune.measure import confirm
from autotune.records import Measurement
from autotune.report import summary_table, summary_text
from autotune.result import _precision
from autotune.space import Candidate
from autotune.study import (
    DB_NAME,
    TRACEBACK_SUFFIX,
    RunMeta,
    Store,
    StudySettings,
    TrialRecord,
    load_confirmed,
    onnx_id,
    skipped,
)

#: ``max_drop`` of :class:`ParetoSet`: the floor the run recorded
RECORDED = "recorded"


@dataclass
class TrialResult:
    """One measured and evaluated candidate."""

    number: int
    candidate: Candidate
    accuracy: float
    latency_ms: float
    size_bytes: int
    feasible: bool
    measurement: Measurement
    artifact_path: Path
    sha256: str
    baseline: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    recovery: dict[str, Any] | None = None  # what ran, and the accuracy before it
    confirmed: dict[str, Any] | None = None  # the confirmation round's figures, when confirmed
    peak_memory_bytes: int | None = None  # the search process's peak during the trial
    #: layer -> the precision onnxruntime runs it in (CPU searches); None: not inspected
    precision: dict[str, str] | None = None
    #: where the artifact is when it is not on this disk (opened on first use)
    store: Callable[[], Store | None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_trial(cls, trial: FrozenTrial, run_dir: Path) -> TrialResult:
        """A COMPLETE trial: its record has a candidate, an artifact and a measurement."""
        record = TrialRecord.from_trial(trial)
        path = Path(record.artifact_path or "")
        values = (trial.values[0], trial.values[1], trial.values[2])
        return cls.of(
            trial.number, record, values, trial.constraints, path if path.is_absolute() else run_dir / path
        )

    @classmethod
    def of(
        cls,
        number: int,
        record: TrialRecord,
        values: tuple[float, float, float],
        constraints: dict[str, float],
        artifact_path: Path,
    ) -> TrialResult:
        """A trial's result from its record and objective values (also before Optuna stores them)."""
        assert record.candidate and record.artifact_path and record.sha256 and record.measurement
        accuracy, latency, size = values
        return cls(
            number=number,
            candidate=record.candidate,
            accuracy=accuracy,
            latency_ms=latency,
            size_bytes=int(size),
            # the accuracy floor is the run's (ParetoSet applies meta.floor, or the max_drop it
            # is given), not the trial's own constraint: every trial is decided alike
            feasible=all(c <= 0 for k, c in constraints.items() if k != "accuracy_floor"),
            measurement=record.measurement,
            artifact_path=artifact_path,
            sha256=record.sha256,
            baseline=record.baseline,
            timings=record.timings,
            recovery=record.recovery,
            peak_memory_bytes=record.peak_memory_bytes,
            precision=record.precision,
        )

    @property
    def precision_changes(self) -> dict[str, tuple[str, str]]:
        """``layer -> (chosen, runs)`` where onnxruntime runs another precision than chosen."""
        return _precision.changes(self.candidate, self.precision)

    @property
    def as_run(self) -> Candidate:
        """The candidate with each layer's bit-width as onnxruntime runs it."""
        return _precision.as_run(self.candidate, self.precision)

    def describe(self) -> str:
        """The configuration as it runs (what the summary and the report show)."""
        return _precision.describe(self.candidate, self.precision)

    @property
    def ratio(self) -> float | None:
        """The latency ratio to the study's reference (paired timing); None when unpaired."""
        return self.measurement.ratio

    def latency_record(self) -> dict[str, Any]:
        """The study's latency and what it is made of (docs/measurement.md): reference latency x
        ratio, the ratio's 95% interval, the reference (median, sha256), the window's medians."""
        m = self.measurement
        ratio = m.ratio
        out: dict[str, Any] = {
            "ms": self.latency_ms,
            "ratio": ratio,
            "ratio_ci": m.ratio_ci,
            "reference_median_ms": self.latency_ms / ratio if ratio else None,  # the study's estimate
            "reference_sha256": m.reference_sha256,
            # the raw figures of the measuring window(s): the candidate's and the reference's own
            "in_window_median_ms": m.median_ms,
            "in_window_reference_median_ms": m.reference_median_ms,
        }
        if m.session_ratios:  # timed in several sessions: the interval above is over them
            out["session_ratios"] = m.session_ratios
            out["ratio_ci_within"] = m.ratio_ci_within
        if self.confirmed:
            out["confirmed"] = {k: self.confirmed.get(k) for k in ("latency_ms", "ratio", "ratio_ci")}
            out["borderline"] = bool(self.confirmed.get("borderline"))
        return out

    def _here(self) -> bool:
        return self.artifact_path.is_file() and self.artifact_path.stat().st_size == self.size_bytes

    def _fetch(self, dest: Path) -> Path:
        store = self.store() if self.store is not None else None
        if store is None:
            raise UserError(f"artifact of trial {self.number} is missing: {self.artifact_path}")
        return store.fetch(onnx_id(self.sha256), dest, self.sha256)

    def local_file(self) -> Path:
        """The artifact on this disk: fetched from the study's store into the run folder if
        another worker built it."""
        return self.artifact_path if self._here() else self._fetch(self.artifact_path)

    def export(self, path: str | Path) -> Path:
        """Copy the ONNX artifact to ``path`` and write ``path.json`` beside it (config, figures)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self._here():
            shutil.copyfile(self.artifact_path, path)
        else:
            self._fetch(path)  # from the store, checked against its sha256
        path.with_suffix(".json").write_text(json.dumps(self.export_info(path), indent=2, default=str))
        return path

    def export_info(self, artifact: Path | None = None) -> dict[str, Any]:
        """The export JSON: configuration, figures, session options (``artifact``: a local copy)."""
        m = self.measurement
        info = {
            "trial": self.number,
            "sha256": self.sha256,
            "accuracy": self.accuracy,
            # the in-window figures (raw per-run times); the study's latency is "latency" below
            "in_window_ms": {"median": m.median_ms, "p90": m.p90_ms, "p99": m.p99_ms, "cv": m.cv, "n": m.n},
            "latency_status": m.status,
            "latency": self.latency_record(),
            "size_bytes": self.size_bytes,
            "feasible": self.feasible,
            "baseline": self.baseline,
            "config": self.candidate.to_dict(),
            "fingerprint": m.fingerprint,
        }
        if self.peak_memory_bytes is not None:  # recorded since the memory budget (older studies lack it)
            info["peak_memory_bytes"] = self.peak_memory_bytes
        if self.precision is not None:
            info["precision"] = {
                "runs": self.precision,  # every searched layer, as onnxruntime's CPU provider runs it
                "changed": {k: {"chosen": c, "runs": r} for k, (c, r) in self.precision_changes.items()},
                "config_as_run": self.as_run.to_dict(),
            }
        info.update(export_fields(self.candidate, m, artifact or self.artifact_path, self.number))
        return info


@dataclass
class FailedTrial:
    """A candidate that failed: the stage, the one-line reason, and its full traceback's file."""

    number: int
    stage: str
    reason: str
    traceback_path: Path | None = None
    candidate: Candidate | None = None

    @classmethod
    def from_trial(cls, trial: FrozenTrial, run_dir: Path) -> FailedTrial:
        record = TrialRecord.from_trial(trial)
        return cls(
            number=trial.number,
            stage=record.fail_stage or "unknown",
            reason=record.fail_reason or "",
            traceback_path=run_dir / record.traceback if record.traceback else None,
            candidate=record.candidate,
        )


@dataclass
class SkippedTrial:
    """A sampled candidate the latency predictor put beyond the budget: built, never measured.
    ``predicted``: the predicted ratio and latency, the budget ratio and the margin used."""

    number: int
    candidate: Candidate | None
    predicted: dict[str, Any]


def storage_url(run_dir: str | Path | None = None, storage: str | None = None) -> str:
    """The Optuna storage URL of a runs directory (``runs/NAME``), or ``storage`` as given."""
    if storage is not None:
        return storage
    if run_dir is None:
        raise UserError("give a runs directory, or --storage URL with --study NAME")
    db = Path(run_dir) / DB_NAME
    if not db.is_file():
        raise UserError(f"{run_dir}: not an autotune run directory (no {DB_NAME})")
    return f"sqlite:///{db}"


def _figure(t: TrialResult) -> confirm.Figure:
    return confirm.figure(t.number, t.accuracy, t.latency_ms, t.size_bytes, t.measurement)


def load_study(
    run_dir: str | Path | None = None, storage: str | None = None, study_name: str | None = None
) -> optuna.Study:
    """Open a study from a runs directory (``runs/NAME``) or a storage URL and name."""
    storage = storage_url(run_dir, storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if study_name is None:
        if len(names) != 1:
            raise UserError(
                f"{storage}: holds {len(names)} studies; pick one with --study ({', '.join(names)})"
            )
        study_name = names[0]
    if study_name not in names:
        raise UserError(f"{storage}: no study named {study_name!r} (found: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=storage)


class ParetoSet:
    """A study's results: ``trials`` (every completed trial), ``failures`` (every failed
    candidate) and ``pareto`` (the feasible, non-dominated ones: accuracy up, latency down,
    size down). Iterating the set, or ``len()``, covers the Pareto members only.
    """

    def __init__(
        self,
        study: optuna.Study,
        run_dir: Path | None = None,
        storage: str | None = None,
        artifacts: str | Store | None = None,
        max_drop: str | float | None = RECORDED,
    ) -> None:
        self.study = study
        self.meta = RunMeta.from_study(study) or RunMeta()
        self.settings = StudySettings.from_study(study)
        if run_dir is None and not Path(self.meta.run_dir).is_dir():
            # another machine's run folder: fetched files land in ./runs/<study>
            run_dir = Path("runs") / study.study_name
        self.run_dir = Path(run_dir or self.meta.run_dir)
        self.storage = storage  # the storage URL, when known (the report names it)
        #: the artifact store: given, or the one recorded with the study (opened when first needed)
        self._store: Store | None = artifacts if isinstance(artifacts, Store) else None
        self._store_url = artifacts if isinstance(artifacts, str) else None
        self.budget_ms: float = float(self.meta.budget_ms)
        #: where feasibility is decided: a relative budget on the ratio alone
        self.limit = Limit(self.budget_ms, self.meta.budget_fraction)
        self.report_path: Path | None = None  # set once a report is written
        trials = study.get_trials(deepcopy=False)
        #: every completed trial (feasible or not); failed candidates are in ``failures``
        self.trials: list[TrialResult] = [
            TrialResult.from_trial(t, self.run_dir) for t in trials if t.state == TrialState.COMPLETE
        ]
        self.failures: list[FailedTrial] = [
            FailedTrial.from_trial(t, self.run_dir)
            for t in trials
            if t.state == TrialState.FAIL and TrialRecord.from_trial(t).failed_by_candidate
        ]
        #: candidates the latency predictor skipped (PRUNED, with the predicted figure; not measured)
        self.skipped: list[SkippedTrial] = [
            SkippedTrial(t.number, record.candidate, record.predicted)
            for t in trials
            if skipped(t) and (record := TrialRecord.from_trial(t)).predicted is not None
        ]
        #: the confirmation round's figures, by trial number (latency_ms, ratio, ratio_ci, borderline)
        self.confirmed: dict[int, dict[str, Any]] = load_confirmed(study)
        #: the lowest acceptable score (--max-drop, default 5% below the unmodified model); None: off.
        #: The run's, unless ``max_drop`` re-decides the finished study with another one
        self.floor: float | None = self.meta.floor
        reference = self.meta.reference_record
        if max_drop != RECORDED and reference is not None:
            drop = parse_floor_option(max_drop)
            self.floor = None if drop is None else drop.floor(reference.accuracy)
        for t in self.trials:
            t.confirmed = self.confirmed.get(t.number)
            t.store = self.store
            if self.floor is not None and t.accuracy < self.floor:
                t.feasible = False  # never the best, never in the Pareto set, never exported by default
        # noise-aware: a latency difference inside the two candidates' resolution does not count
        front = {f.key for f in confirm.pareto([_figure(t) for t in self.feasible])}
        #: feasible, non-dominated trials, fastest first
        self.pareto: list[TrialResult] = sorted(
            (t for t in self.trials if t.number in front), key=lambda t: t.latency_ms
        )

    @classmethod
    def load(
        cls,
        run_dir: str | Path | None = None,
        storage: str | None = None,
        study_name: str | None = None,
        artifacts: str | None = None,
        max_drop: str | float | None = RECORDED,
    ) -> ParetoSet:
        """A study from its runs folder, or its storage URL and name; ``artifacts``: the artifact
        store's URL when it differs from the one recorded with the study (another mount point);
        ``max_drop``: another accuracy floor than the run's (None: none), to see what it names."""
        study = load_study(run_dir, storage, study_name)
        run = Path(run_dir) if run_dir else None
        return cls(study, run, storage=storage_url(run_dir, storage), artifacts=artifacts, max_drop=max_drop)

    def store(self) -> Store | None:
        """The study's artifact store (None when the study recorded none and none was given)."""
        if self._store is None:
            url = self._store_url or (self.settings.artifacts if self.settings else None)
            if url is not None:
                self._store = Store(url)
        return self._store

    def store_reachable(self) -> bool:
        """Whether the study's artifact store opens here (a summary needs none)."""
        try:
            return self.store() is not None
        except UserError:
            return False

    def fetch_tracebacks(self) -> int:
        """Fetch the failed candidates' tracebacks missing here from the store; returns how many."""
        fetched = 0
        by_number = {t.number: t for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        for f in self.failures:
            if f.traceback_path is None or f.traceback_path.is_file() or f.number not in by_number:
                continue
            store = self.store()
            found = store and Store.find(by_number[f.number], self.study._storage, TRACEBACK_SUFFIX)
            if store is not None and found:
                store.fetch(found, f.traceback_path)
                fetched += 1
        return fetched

    # -- the questions people ask ---------------------------------------------------------

    @property
    def feasible(self) -> list[TrialResult]:
        return [t for t in self.trials if t.feasible]

    @property
    def best(self) -> TrialResult | None:
        """Most accurate candidate under the budget and at or above the accuracy floor; among
        equally accurate ones, those as fast as the fastest (inside their latency resolution) are
        decided by size. None if none meets both."""
        figures = [self._confirmed_figure(t) for t in self.feasible]  # confirmed figures win
        chosen = confirm.best([f for f in figures if confirm.within(f, self.limit)])
        return next(t for t in self.feasible if t.number == chosen.key) if chosen else None

    def _confirmed_figure(self, t: TrialResult) -> confirm.Figure:
        c = self.confirmed.get(t.number)
        if c is None:
            return _figure(t)
        ci = (float(c["ratio_ci"][0]), float(c["ratio_ci"][1])) if c.get("ratio_ci") else None
        lat, res = c["latency_ms"], c["resolution"]
        return confirm.Figure(t.number, t.accuracy, lat, t.size_bytes, res, c.get("ratio"), ci)

    @property
    def borderline(self) -> list[int]:
        """Confirmed trials whose latency interval straddles the budget."""
        return sorted(n for n, c in self.confirmed.items() if c.get("borderline"))

    def fastest(self, k: int = 3) -> list[TrialResult]:
        return sorted(self.trials, key=lambda t: t.latency_ms)[:k]

    def closest(self, k: int = 5) -> list[TrialResult]:
        """When nothing meets every limit: the most accurate under budget (else the fastest),
        and the fastest above the floor."""
        under = [t for t in self.trials if self.limit.within(t.latency_ms, t.ratio)]
        rows = sorted(under, key=lambda t: -t.accuracy)[:k] if under else self.fastest(k)
        above = self.fastest_above_floor()
        if above is not None and above not in rows:
            rows = [*rows[: k - 1], above]
        return rows

    def most_accurate_under_budget(self) -> TrialResult | None:
        """The most accurate candidate that meets the latency budget, whatever its accuracy."""
        under = [t for t in self.trials if self.limit.within(t.latency_ms, t.ratio)]
        return max(under, key=lambda t: (t.accuracy, -t.latency_ms)) if under else None

    def fastest_above_floor(self) -> TrialResult | None:
        """The fastest candidate at or above the accuracy floor (None without a floor)."""
        if self.floor is None:
            return None
        above = [t for t in self.trials if t.accuracy >= self.floor]
        return min(above, key=lambda t: t.latency_ms) if above else None

    @property
    def reference_accuracy(self) -> float | None:
        """The unmodified model's score (measured first), else the fp32 baseline's."""
        if (reference := self.meta.reference_record) is not None:
            return reference.accuracy
        fp32 = self.baselines.get("fp32")
        return fp32.accuracy if fp32 else None

    @property
    def baselines(self) -> dict[str, TrialResult]:
        return {t.baseline: t for t in self.trials if t.baseline}

    def trial(self, number: int) -> TrialResult:
        for t in self.trials:
            if t.number == number:
                return t
        for f in self.failures:
            if f.number == number:
                where = f"; full traceback: {f.traceback_path}" if f.traceback_path else ""
                raise UserError(f"trial {number} failed ({f.reason}){where}")
        raise UserError(f"trial {number} is not a completed trial of study {self.study.study_name!r}")

    @property
    def tracebacks_dir(self) -> Path | None:
        """Where the failed candidates' full tracebacks are (None when none was stored here)."""
        paths = [f.traceback_path for f in self.failures if f.traceback_path]
        return paths[0].parent if paths else None

    def failure_reasons(self) -> Counter[str]:
        return Counter(f.stage for f in self.failures)

    def __iter__(self) -> Iterator[TrialResult]:
        return iter(self.pareto)

    def __len__(self) -> int:
        return len(self.pareto)

    def report(self, path: str | Path | None = None) -> Path:
        """Write the self-contained Plotly HTML report; returns its path."""
        from autotune.report import write_report

        return write_report(self, Path(path) if path else None)

    # -- text output (autotune/report/_summary.py) -----------------------------------------------
    def table(self) -> str:
        return summary_table(self)

    def summary(self) -> str:
        return summary_text(self)
