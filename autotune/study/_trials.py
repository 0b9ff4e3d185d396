"""The study's trials around the objective: the baselines enqueued first, which trials count
toward ``--trials``, and the latency predictor's skips (issue 10).

The predictor (:mod:`autotune.study._predictor`) learns the latency ratio of the candidates measured so
far, per device and per study, from the built artifacts. Once trained, a *sampled* candidate it
puts beyond the budget by the safe margin is built but not measured or evaluated: the trial is
recorded as PRUNED with the predicted figure (:attr:`TrialRecord.predicted`; never as a
measurement, so never in the Pareto set or ``best``). Enqueued trials (baselines, greedy
candidates, final recoveries) are always measured. Every measured candidate is predicted
first, so the error is tracked on candidates measured anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from autotune.budget import Limit
from autotune.records import RuntimeOptions
from autotune.space import SearchSpace
from autotune.study import _predictor
from autotune.study._predictor import LatencyPredictor
from autotune.study._records import Baseline, TrialRecord, enqueued_params


def skipped(t: optuna.trial.FrozenTrial) -> bool:
    """A trial the predictor skipped (pruned, with its predicted figure)."""
    return t.state == TrialState.PRUNED and TrialRecord.from_trial(t).predicted is not None


def counted(study: optuna.Study) -> int:
    """Trials that count toward the requested number: completed, failed by the candidate, or
    skipped by the predictor (the sampler's proposal got its answer). Final recovery's trials come
    on top of the number (study/_final.py): one finished by a worker must not end another's search."""

    def counts(t: optuna.trial.FrozenTrial) -> bool:
        if t.state == TrialState.COMPLETE or skipped(t):
            return TrialRecord.from_trial(t).final_of is None
        return (
            t.state == TrialState.FAIL
            and (r := TrialRecord.from_trial(t)).failed_by_candidate
            and r.final_of is None
        )

    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


def enqueue_baselines(study: optuna.Study, space: SearchSpace, greedy: list[dict[str, Any]]) -> None:
    """Queue the baselines and greedy candidates not done, queued or running yet. One that failed
    because of an interrupt or a killed worker (no reason recorded) is queued again."""
    optuna.storages.fail_stale_trials(study)  # a killed worker's trials, once their heartbeat stops
    done, taken = set(), []
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.from_trial(t)
        if t.state == TrialState.FAIL and not record.failed_by_candidate:
            continue  # interrupted, or its worker was killed: it has no answer
        taken.append(enqueued_params(t))
        if t.state != TrialState.PRUNED:
            done.add(record.baseline)
    named = [(Baseline.uniform(name), p) for name, p in space.baselines().items()]
    named += [(Baseline.greedy(i + 1), p) for i, p in enumerate(greedy)]
    for baseline, params in named:
        # not Optuna's skip_if_exists: it matches the interrupted trial itself, which never re-ran
        if baseline.name not in done and params not in taken:
            TrialRecord.of_baseline(baseline).enqueue(study, params, skip_if_exists=False)
            taken.append(params)


class StudyPredictor:
    """The predictor as the search uses it.

    Args:
        space: the study's search space.
        reference: the unmodified model's ONNX file (the MACs and activations features are shares of).
        inputs: the deployment inputs (static shapes for the MAC count).
        limit: the budget; a relative one is a ratio already, an absolute one is divided by
            ``reference_ms``.
        reference_ms: the unmodified model's latency.
        run_dir: the study's folder, which trial records' artifact paths are relative to.
    """

    def __init__(
        self,
        space: SearchSpace,
        reference: Path,
        inputs: dict[str, np.ndarray],
        limit: Limit,
        reference_ms: float,
        run_dir: Path,
    ) -> None:
        self.model = LatencyPredictor(reference, inputs, space, min_train=_predictor.MIN_TRAIN)
        self.run_dir = run_dir
        self.reference_ms = reference_ms
        self.budget_ratio = limit.fraction if limit.fraction is not None else limit.budget_ms / reference_ms

    def replay(self, study: optuna.Study) -> None:
        """A resumed study: learn from its measured trials in order, count its skips."""
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            record = TrialRecord.from_trial(t)
            if t.state == TrialState.COMPLETE and record.candidate and record.measurement:
                path = self.run_dir / record.artifact_path if record.artifact_path else None
                if record.measurement.ratio and path is not None and path.exists():
                    self.model.observe(path, record.candidate.runtime, record.measurement.ratio)
            elif skipped(t):
                self.model.skipped += 1

    def skip(self, trial: optuna.Trial, artifact: Path, runtime: RuntimeOptions) -> dict[str, Any] | None:
        """The predicted figure when the built candidate is not worth measuring, else None."""
        if TrialRecord.from_trial(trial).enqueued is not None:  # enqueued on purpose: always measured
            return None
        beyond, predicted = self.model.beyond(artifact, runtime, self.budget_ratio)
        if not beyond or predicted is None:
            return None
        return {
            "ratio": round(predicted, 5),
            "latency_ms": round(predicted * self.reference_ms, 6),
            "budget_ratio": round(self.budget_ratio, 5),
            "margin": round(self.model.margin, 4),
            "trained_on": self.model.observed,
        }

    def observe(self, artifact: Path, runtime: RuntimeOptions, ratio: float | None) -> float | None:
        """A measured ratio: returns what had been predicted for it (None before training)."""
        if ratio is None or not np.isfinite(ratio) or ratio <= 0:
            return None
        return self.model.observe(artifact, runtime, ratio)

    @property
    def stats(self) -> dict[str, Any]:
        return {"enabled": True, "budget_ratio": round(self.budget_ratio, 5), **self.model.stats}
