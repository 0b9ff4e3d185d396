"""The search's progress: a bar on a terminal, one line per finished trial for a log.

The bar (tqdm, on stderr) is drawn when stderr is a terminal. One line per finished trial goes
to stdout, flushed at once, whenever stdout is not the terminal the bar is drawn on: a log file
(``autotune ... > log.txt``), a pipe, CI, ``nohup``. Both show the best feasible candidate so
far (under the budget and the accuracy floor); the lines also the time left at the rate so far.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from autotune.result import FailedTrial, TrialResult
from autotune.study import TrialRecord, skipped

REASON_CHARS = 120  # a failure's reason, cut to keep one line per trial


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream is no terminal
        return False


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Called back after every trial (:meth:`update`); :meth:`close` at the end.

    ``total``: trials this run is to finish (the ETA's denominator). ``out`` / ``err``: the
    streams of the lines and the bar (default: stdout and stderr, looked up when created).
    """

    def __init__(
        self,
        total: int,
        run_dir: Path,
        enabled: bool,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        out = sys.stdout if out is None else out
        err = sys.stderr if err is None else err
        bar = enabled and _isatty(err)
        # lines unless the user watches the bar on the very terminal they would go to
        self.out = out if enabled and not (bar and _isatty(out)) else None
        self.bar = tqdm(total=max(total, 0), disable=not bar, unit="trial", file=err, dynamic_ncols=True)
        self.total = max(total, 0)
        self.run_dir = run_dir
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.failed = 0
        self.best: TrialResult | None = None

    def update(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.done += 1
        result = None
        if trial.state == TrialState.COMPLETE:
            result = TrialResult.from_trial(trial, self.run_dir)
            if result.feasible and (
                self.best is None
                or (result.accuracy, -result.latency_ms) > (self.best.accuracy, -self.best.latency_ms)
            ):
                self.best = result
        elif trial.state == TrialState.FAIL:
            self.failed += 1
        best = f"{self.best.accuracy:.2f} @ {self.best.latency_ms:.3f}ms" if self.best else "none yet"
        self.bar.set_postfix_str(f"best under budget: {best}; failed {self.failed}")
        self.bar.update(1)
        if self.out is not None:
            # flushed now: a log file or pipe is block-buffered, and the line is news only now
            print(self.line(trial, result), file=self.out, flush=True)

    def line(self, trial: FrozenTrial, result: TrialResult | None) -> str:
        """``trial 12  3/30  COMPLETE  accuracy 97.50  ratio x0.482 (1.234 ms)  feasible yes  best
        97.80 @ x0.450 (trial 5)  elapsed 0:42  ETA 5:12``; unknown figures are ``-``, a failure's
        reason ends the line."""
        state, ratio, why = trial.state.name, "-", ""
        if result is not None:
            ratio = f"x{result.ratio:.3f}" if result.ratio is not None else "-"
            ratio += f" ({result.latency_ms:.3f} ms)"
        elif skipped(trial):  # built, not measured: the predictor put it beyond the budget
            predicted = TrialRecord.from_trial(trial).predicted or {}
            state, ratio = "SKIPPED", f"x{predicted.get('ratio', float('nan')):.3f} predicted"
        elif trial.state == TrialState.FAIL:
            failure = FailedTrial.from_trial(trial, self.run_dir)
            if failure.reason:
                why = f"  ({failure.reason[:REASON_CHARS]})"
        accuracy = f"{result.accuracy:.2f}" if result is not None else "-"
        feasible = "yes" if result is not None and result.feasible else "no"
        elapsed = self.clock() - self.started
        left = self.total - self.done
        eta = _clock(elapsed / self.done * left) if left > 0 else "-"
        return (
            f"trial {trial.number}  {self.done}/{self.total}  {state}  accuracy {accuracy}  "
            f"ratio {ratio}  feasible {feasible}  best {self._best()}  "
            f"elapsed {_clock(elapsed)}  ETA {eta}{why}"
        )

    def _best(self) -> str:
        if self.best is None:
            return "none yet"
        ratio = f"x{self.best.ratio:.3f}" if self.best.ratio is not None else f"{self.best.latency_ms:.3f} ms"
        return f"{self.best.accuracy:.2f} @ {ratio} (trial {self.best.number})"

    def close(self) -> None:
        self.bar.close()
