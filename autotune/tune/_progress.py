"""The search's progress bar: ETA, and the best candidate under the budget and the floor so far."""

from __future__ import annotations

import sys

import optuna
from optuna.trial import TrialState
from tqdm import tqdm


class ProgressBar:
    """tqdm bar with ETA and the best feasible candidate so far."""

    def __init__(self, total: int, budget_ms: float, floor: float | None, enabled: bool) -> None:
        self.budget_ms = budget_ms
        self.floor = -float("inf") if floor is None else floor
        self.bar = tqdm(
            total=max(total, 0), disable=not enabled, unit="trial", file=sys.stderr, dynamic_ncols=True
        )
        self.best: tuple[float, float] | None = None
        self.failed = 0

    def update(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            acc, lat, _ = trial.values
            if (
                trial.constraints.get("latency_budget", lat - self.budget_ms) <= 0  # as the study decided
                and acc >= self.floor
                and (self.best is None or (acc, -lat) > (self.best[0], -self.best[1]))
            ):
                self.best = (acc, lat)
        elif trial.state == TrialState.FAIL:
            self.failed += 1
        best = f"{self.best[0]:.2f} @ {self.best[1]:.3f}ms" if self.best else "none yet"
        self.bar.set_postfix_str(f"best under budget: {best}; failed {self.failed}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
