"""Exactly ``--trials`` counted trials, however many workers share the study.

Each worker stops once the study holds the requested number, but trials already running on other
workers would still finish and overshoot it. So a trial claims a slot: it goes on only when fewer
than ``target`` trials *before it* (by number, which the database hands out in order) are
counted, running or queued; otherwise it is surplus, recorded as pruned and marked so
(:attr:`TrialRecord.surplus`: never counted, never in the results) and its worker waits until a
slot frees up (a killed worker's trial failed by the heartbeat) or the study is done.
"""

from __future__ import annotations

import time
import warnings

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.study._records import TrialRecord
from autotune.study._trials import counted, skipped


def _claims(t: FrozenTrial) -> bool:
    record = TrialRecord.from_trial(t)
    if record.final_of is not None or record.surplus:
        return False  # final recoveries are extra trials; surplus ones gave their slot back
    if t.state in (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE) or skipped(t):
        return True
    return t.state == TrialState.FAIL and record.failed_by_candidate


def surplus(study: optuna.Study, number: int, target: int) -> bool:
    """Whether trial ``number`` finds every slot taken by trials before it."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and _claims(t)) >= target


def free_slots(study: optuna.Study, target: int) -> int:
    """Slots no trial has claimed yet."""
    return target - sum(1 for t in study.get_trials(deepcopy=False) if _claims(t))


def wait_for_slot(study: optuna.Study, target: int, poll_s: float, deadline: float | None) -> bool:
    """Wait while every slot is claimed by trials running on other workers and none is queued;
    True once there is work (a queued trial, or a free slot), False when the study is done or
    ``deadline`` (``time.time()``) passes. Meanwhile stale trials are failed (and queued again)
    here too, as Optuna does when a trial starts."""
    while True:
        trials = study.get_trials(deepcopy=False)
        if counted(study) >= target:
            return False
        if any(t.state == TrialState.WAITING for t in trials):
            return True  # queued (baselines, retries): a trial that is surplus gives its slot back
        if target - sum(1 for t in trials if _claims(t)) > 0:
            return True
        if deadline is not None and time.time() >= deadline:
            return False
        time.sleep(poll_s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
