"""Results: trials read back from the Optuna study, the Pareto set, export.

Everything here is rebuilt from storage, so a finished, interrupted or remote study reads the
same way: ``ParetoSet.load("runs/my-study")``.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.devices import Measurement
from autotune.errors import UserError
from autotune.space import Candidate

META_KEY = "autotune"  # study user attribute holding the run's metadata
DB_NAME = "study.db"


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

    @classmethod
    def from_trial(cls, trial: FrozenTrial, run_dir: Path) -> TrialResult:
        ua = trial.user_attrs
        accuracy, latency, size = trial.values
        path = Path(ua["artifact"]["path"])
        return cls(
            number=trial.number,
            candidate=Candidate.from_dict(ua["config"]),
            accuracy=accuracy,
            latency_ms=latency,
            size_bytes=int(size),
            feasible=all(c <= 0 for c in trial.constraints.values()),
            measurement=Measurement.from_dict(ua["measurement"]),
            artifact_path=path if path.is_absolute() else run_dir / path,
            sha256=ua["artifact"]["sha256"],
            baseline=ua.get("baseline"),
            timings=ua.get("timings", {}),
        )

    def export(self, path: str | Path) -> Path:
        """Copy the ONNX artifact to ``path`` and write ``path.json`` beside it (config, figures)."""
        path = Path(path)
        if not self.artifact_path.is_file():
            raise UserError(f"artifact of trial {self.number} is missing: {self.artifact_path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.artifact_path, path)
        m = self.measurement
        info = {
            "trial": self.number,
            "sha256": self.sha256,
            "accuracy": self.accuracy,
            "latency_ms": {"median": m.median_ms, "p90": m.p90_ms, "p99": m.p99_ms, "cv": m.cv, "n": m.n},
            "latency_status": m.status,
            "size_bytes": self.size_bytes,
            "feasible": self.feasible,
            "baseline": self.baseline,
            "config": self.candidate.to_dict(),
            "fingerprint": m.fingerprint,
        }
        path.with_suffix(".json").write_text(json.dumps(info, indent=2, default=str))
        return path


def load_study(
    run_dir: str | Path | None = None, storage: str | None = None, study_name: str | None = None
) -> optuna.Study:
    """Open a study from a runs directory (``runs/NAME``) or a storage URL and name."""
    if storage is None:
        if run_dir is None:
            raise UserError("give a runs directory, or --storage URL with --study NAME")
        db = Path(run_dir) / DB_NAME
        if not db.is_file():
            raise UserError(f"{run_dir}: not an autotune run directory (no {DB_NAME})")
        storage = f"sqlite:///{db}"
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
    """Feasible, non-dominated candidates of a study (accuracy up, latency down, size down)."""

    def __init__(self, study: optuna.Study, run_dir: Path | None = None) -> None:
        self.study = study
        self.meta: dict[str, Any] = study.user_attrs.get(META_KEY, {})
        self.run_dir = Path(run_dir or self.meta.get("run_dir", "."))
        self.budget_ms: float = float(self.meta.get("budget_ms", float("inf")))
        self.report_path: Path | None = None  # set once a report is written
        trials = study.get_trials(deepcopy=False)
        self.trials: list[TrialResult] = [
            TrialResult.from_trial(t, self.run_dir) for t in trials if t.state == TrialState.COMPLETE
        ]
        self.failures: list[FrozenTrial] = [
            t for t in trials if t.state == TrialState.FAIL and "fail_reason" in t.user_attrs
        ]
        pareto_numbers = {t.number for t in study.best_trials} if self.trials else set()
        self.members: list[TrialResult] = sorted(
            (t for t in self.trials if t.number in pareto_numbers and t.feasible), key=lambda t: t.latency_ms
        )

    @classmethod
    def load(
        cls, run_dir: str | Path | None = None, storage: str | None = None, study_name: str | None = None
    ) -> ParetoSet:
        study = load_study(run_dir, storage, study_name)
        return cls(study, Path(run_dir) if run_dir else None)

    # -- the questions people ask ---------------------------------------------------------
    @property
    def pareto(self) -> list[TrialResult]:
        return self.members

    @property
    def feasible(self) -> list[TrialResult]:
        return [t for t in self.trials if t.feasible]

    @property
    def best(self) -> TrialResult | None:
        """Most accurate candidate under the budget (then fastest); None if none meets it."""
        if not self.feasible:
            return None
        return max(self.feasible, key=lambda t: (t.accuracy, -t.latency_ms))

    def fastest(self, k: int = 3) -> list[TrialResult]:
        return sorted(self.trials, key=lambda t: t.latency_ms)[:k]

    @property
    def baselines(self) -> dict[str, TrialResult]:
        return {t.baseline: t for t in self.trials if t.baseline}

    def trial(self, number: int) -> TrialResult:
        for t in self.trials:
            if t.number == number:
                return t
        raise UserError(f"trial {number} is not a completed trial of study {self.study.study_name!r}")

    def failure_reasons(self) -> Counter[str]:
        return Counter(t.user_attrs.get("fail_stage", "unknown") for t in self.failures)

    def __iter__(self) -> Iterator[TrialResult]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def report(self, path: str | Path | None = None) -> Path:
        """Write the self-contained Plotly HTML report; returns its path."""
        from autotune.report import write_report

        return write_report(self, Path(path) if path else None)

    # -- text output ----------------------------------------------------------------------
    def table(self) -> str:
        metric = self.meta.get("metric", "accuracy")
        rows = self.members if self.members else self.fastest(5)
        fp32 = self.baselines.get("fp32")
        header = (
            f"{'trial':>5}  {metric:>9}  {'Δ vs fp32':>9}  {'median ms':>9}  {'p90 ms':>8}  "
            f"{'CV':>5}  {'size KiB':>9}  config"
        )
        lines = [header, "-" * len(header)]
        for t in rows:
            delta = f"{t.accuracy - fp32.accuracy:+.2f}" if fp32 else "n/a"
            flag = "" if t.measurement.status == "ok" else f" [{t.measurement.status}]"
            tag = f" ({t.baseline})" if t.baseline else ""
            mark = "*" if self.best and t.number == self.best.number else " "
            lines.append(
                f"{t.number:>4}{mark}  {t.accuracy:>9.2f}  {delta:>9}  {t.latency_ms:>9.3f}  "
                f"{t.measurement.p90_ms:>8.3f}  {t.measurement.cv:>5.1%}  {t.size_bytes / 1024:>9.1f}  "
                f"{t.candidate.describe()}{tag}{flag}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        n_fail = len(self.failures)
        lines = []
        budget = self.meta.get("budget", f"{self.budget_ms}ms")
        device = self.meta.get("device", "?")
        lines.append(
            f"study {self.study.study_name}: {len(self.trials)} complete, {n_fail} failed; "
            f"budget {budget} on {device}"
        )
        if n_fail:
            lines.append("failures: " + ", ".join(f"{k} x{v}" for k, v in self.failure_reasons().items()))
        if self.members:
            lines.append(f"Pareto set under the budget ({len(self.members)} candidates, * = best):")
        else:
            lines.append(
                f"NO candidate met the budget of {budget}. The fastest candidates found "
                "(everything is saved; try a larger budget or a wider search space):"
            )
        lines.append(self.table())
        stats = self.meta.get("last_run", {}).get("measurer", {})
        if stats:
            lines.append("measurements this run: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
            if stats.get("cache_hits") and not stats.get("measured"):
                lines.append("every latency this run came from the measurement cache (identical artifacts)")
        cached = [t.number for t in self.trials if t.measurement.cached]
        if cached:
            lines.append(f"latency reused from the measurement cache in {len(cached)} trial(s): {cached}")
        unstable = [t.number for t in self.trials if t.measurement.status == "unstable"]
        if unstable:
            lines.append(
                f"unstable latency (IQR/median > 10% or CPU contention, after retries) in trials {unstable}"
            )
        drifted = [
            f"{t.number} (x{t.measurement.drift_ratio:.2f})"
            for t in self.trials
            if t.measurement.extra.get("drift_flag") and t.measurement.drift_ratio is not None
        ]
        if drifted:
            lines.append(
                "device drift (canary model slower or faster than at the start) in trials "
                f"{', '.join(drifted)}: their latency is suspect; re-run with --remeasure on a quiet machine"
            )
        return "\n".join(lines)
