"""Final recovery: after the search, which pruned finalists under the budget get distilled from
the unmodified model, in what order and in how much time (docs/accuracy-floor.md).

It runs when a pruned candidate under the budget is below the accuracy floor (with no floor:
whenever one is under the budget), within a share of the search's wall time. Each finalist is
queued again as a new trial (:meth:`Baseline.final`) with the seconds its distillation may take
(:attr:`TrialRecord.final_time_s`); the search's own objective re-builds it with
:func:`recovery_of_final`, measures and scores it. What it did is stored in the run's metadata
as ``search["final"]`` (:class:`FinalRecovery`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.build import Recovery
from autotune.knobs import changes_weights
from autotune.study._records import Baseline, TrialRecord

#: below this many seconds of distillation left for a finalist, final recovery stops
MIN_FINAL_TRAIN_S = 1.0
#: ... or below the time of this many distillation steps, once their duration is known
MIN_FINAL_STEPS = 30


def _records(study: optuna.Study) -> dict[int, TrialRecord]:
    return {t.number: TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)}


def _within(t: FrozenTrial, budget_ms: float) -> bool:
    """Met the latency budget, as the study decided it (the trial's constraint, else its ms)."""
    if "latency_budget" in t.constraints:
        return t.constraints["latency_budget"] <= 0
    return bool(t.values[1] <= budget_ms)


def _pruned(record: TrialRecord) -> bool:
    """A torch-side knob set in any layer (what recovery, and final recovery, work on)."""
    return record.candidate is not None and changes_weights(record.candidate.layers)


def pruned_under_budget(
    study: optuna.Study, budget_ms: float, records: dict[int, TrialRecord] | None = None
) -> list[FrozenTrial]:
    """Completed pruned trials that met the budget, final recovery's own trials left out."""
    records = _records(study) if records is None else records
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if _within(t, budget_ms) and records[t.number].final_of is None and _pruned(records[t.number])
    ]


def final_candidates(
    study: optuna.Study, budget_ms: float, k: int = 2, below: float | None = None
) -> list[FrozenTrial]:
    """The pruned trials under the budget final recovery distils, most promising first: the
    most accurate, the largest, the most accurate uniform baseline, then the ``k``-th most
    accurate and largest; those already distilled (``final_of``) are left out, and with
    ``below`` (the unmodified model's score) those that already score as well: distillation
    from the unmodified model has nothing left to give them."""
    records = _records(study)
    done = {r.final_of for r in records.values()}
    under = pruned_under_budget(study, budget_ms, records)
    pruned = [t for t in under if below is None or t.values[0] < below]
    # accuracy before distillation ranks heavily pruned candidates poorly (BatchNorm-only scores
    # of collapsed models are noise), and distillation recovers what the kept weights can hold:
    # the largest candidates under the budget are finalists too (benchmarks/search_quality.py)
    # ... and so is the best uniform one, so the distilled result never loses to uniform pruning
    uniform = [t for t in pruned if (b := records[t.number].enqueued) is not None and b.role != "greedy"]
    accurate = sorted(pruned, key=lambda t: -t.values[0])[:k]
    largest = sorted(pruned, key=lambda t: -t.values[2])[:k]
    ranks = [[*accurate[:1], *largest[:1], *sorted(uniform, key=lambda t: -t.values[0])[:1]]]
    ranks += [[*accurate[i : i + 1], *largest[i : i + 1]] for i in range(1, k)]
    best: list[FrozenTrial] = []
    for t in (t for rank in ranks for t in rank):
        if t not in best:
            best.append(t)
    return [t for t in best if t.number not in done]


def final_record(number: int, time_limit_s: float | None = None) -> TrialRecord:
    """The record a final recovery of trial ``number`` is queued with."""
    record = TrialRecord.of_baseline(Baseline.final(number))
    record.final_time_s = time_limit_s
    return record


def enqueue_final(study: optuna.Study, budget_ms: float, k: int = 2) -> int:
    """Re-queue every :func:`final_candidates` trial for a longer recovery (:meth:`Baseline.final`);
    returns how many were queued."""
    finalists = final_candidates(study, budget_ms, k)
    for t in finalists:
        final_record(t.number).enqueue(study, t.params, skip_if_exists=False)
    return len(finalists)


def recovery_of_final(record: TrialRecord, final: Recovery) -> Recovery | None:
    """The recovery of a trial queued by final recovery (``final`` within the trial's
    ``final_time_s``); None for any other trial (the builder's own recovery)."""
    if record.final_of is None:
        return None
    return replace(final, time_limit_s=record.final_time_s)


@dataclass
class FinalRecovery:
    """What final recovery did (stored in the run's metadata as ``search["final"]``).

    ``status``: ``ran``, or why not: ``off``, ``not needed`` (every pruned candidate under the
    budget is within the floor, or as accurate as the unmodified model), ``no pruned candidate``
    (under the budget), ``no data`` (no unlabeled inputs), ``already done`` (a resumed study),
    ``no time`` (the share of the wall time could not fit one finalist), ``stopped`` (the search
    ended early)."""

    steps: int
    share: float
    status: str = "off"
    allowance_s: float = 0.0  # share x the search's wall time
    wall_s: float = 0.0  # what it took
    trials: list[int] = field(default_factory=list)  # the new trials' numbers
    finalists: int = 0  # how many it chose
    left_out: int = 0  # finalists it had no time for

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_overhead_s(study: optuna.Study) -> float:
    """What a final trial costs on top of its distillation: 1.5x the median seconds a pruned
    trial took to build, recover, measure and score (the margin: a loaded host's spread)."""
    records = _records(study)
    costs = [
        sum(r.timings.values())
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if _pruned(r := records[t.number]) and r.final_of is None and r.timings
    ]
    return 1.5 * statistics.median(costs) if costs else 0.0


def final_recovery(
    study: optuna.Study,
    budget_ms: float,
    floor: float | None,
    plan: FinalRecovery,
    search_s: float,
    run_trial: Callable[[], object],
    has_data: bool = True,
    deadline: float | None = None,
    stopped: str | None = None,
    reference: float | None = None,
) -> FinalRecovery:
    """Distil the most promising pruned finalists under the budget, one trial each, within
    ``plan.share`` of ``search_s`` (the search's wall time) and before ``deadline``; not after a
    search ``stopped`` early (timeout, infeasible budget). Finalists already as accurate as the
    ``reference`` (the unmodified model's score) are left out.

    Runs when a pruned candidate under the budget is below ``floor`` (with no floor: whenever
    one is under the budget). Each finalist's parameters are queued with ``final_of`` and the
    seconds its distillation may take (``final_time_s``), and ``run_trial()`` runs the study's
    next trial: the objective re-builds, measures and scores it as a new trial. The most
    promising finalist goes first and gets all the time left (its distillation stops at
    ``plan.steps``), so time runs out on the least promising ones."""
    if not plan.steps or not plan.share:
        return plan
    if stopped:
        plan.status = "stopped"
        return plan
    pruned = pruned_under_budget(study, budget_ms)
    if not pruned:
        plan.status = "no pruned candidate"
        return plan
    if floor is not None and all(t.values[0] >= floor for t in pruned):
        plan.status = "not needed"
        return plan
    if not has_data:
        plan.status = "no data"
        return plan
    finalists = final_candidates(study, budget_ms, below=reference)
    if not finalists:  # distilled by an earlier run, or as good as the unmodified model already
        earlier = any(r.final_of is not None for r in _records(study).values())
        plan.status = "already done" if earlier else "not needed"
        return plan
    start = time.time()
    plan.allowance_s = plan.share * search_s
    end = start + plan.allowance_s if deadline is None else min(start + plan.allowance_s, deadline)
    plan.finalists, overhead, min_train = len(finalists), trial_overhead_s(study), MIN_FINAL_TRAIN_S
    for i, t in enumerate(finalists):
        train_s = end - time.time() - overhead
        if train_s < min_train:
            plan.left_out = len(finalists) - i
            break
        final_record(t.number, train_s).enqueue(study, t.params, skip_if_exists=False)
        number = study.get_trials(deepcopy=False)[-1].number  # the queued one
        run_trial()
        done = next((u for u in study.get_trials(deepcopy=False) if u.number == number), None)
        if done is not None and done.state == TrialState.COMPLETE:
            plan.trials.append(done.number)
            record = TrialRecord.from_trial(done)
            kd_steps, timings = (record.recovery or {}).get("kd_steps"), record.timings
            if kd_steps and timings.get("finetune"):  # now the step time is known
                per_step = timings["finetune"] / kd_steps
                min_train = max(MIN_FINAL_TRAIN_S, min(plan.steps, MIN_FINAL_STEPS) * per_step)
            if timings:  # what this trial cost besides distillation, for the next one
                overhead = max(overhead, sum(timings.values()) - timings.get("finetune", 0.0))
    plan.status = "ran" if plan.trials else "no time"
    plan.wall_s = time.time() - start
    return plan
