"""The measurement protocol shared by every backend (docs/measurement.md).

1. phases timed separately (load, first run, warm-up, steady state) -- the backend times load
   and first run, this module the rest;
2. warm-up by time and iterations;
3. stop on both a minimum sample count and a minimum duration (or at ``max_time_s``, flagged
   ``capped``); runs shorter than ``min_sample_ms`` are batched k per sample;
4. n, median, mean, min, p90, p99, IQR, CV; retried when IQR/median is high, then flagged
   ``unstable`` -- never a silent number.

The garbage collector is paused while sampling (as ``timeit`` does), so a collection of the
caller's objects does not land in one sample.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotune.devices._base import Measurement, Protocol

#: ``timer(run, k) -> seconds`` for k back-to-back runs; GPU backends pass one that uses events
Timer = Callable[[Callable[[], object], int], float]


def summarize(samples_ms: list[float]) -> dict[str, Any]:
    """Order statistics of per-run latencies (ms)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    q25, q50, q75, q90, q99 = np.percentile(a, [25, 50, 75, 90, 99])
    mean = float(a.mean())
    return {
        "n": int(a.size),
        "median_ms": float(q50),
        "mean_ms": mean,
        "min_ms": float(a.min()),
        "p90_ms": float(q90),
        "p99_ms": float(q99),
        "iqr_ms": float(q75 - q25),
        "cv": float(a.std(ddof=1) / mean) if a.size > 1 and mean > 0 else 0.0,
    }


def clock_timer(clock: Callable[[], float] = time.perf_counter) -> Timer:
    """The default timer: wall clock around k synchronous runs."""

    def timer(run: Callable[[], object], k: int) -> float:
        t0 = clock()
        for _ in range(k):
            run()
        return clock() - t0

    return timer


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _warm_up(
    run: Callable[[], object], protocol: Protocol, timer: Timer, clock: Callable[[], float]
) -> tuple[float, int, float]:
    """Run until both warm-up thresholds are met; return (mean run s, runs, wall s)."""
    start = clock()
    runs = 0
    busy = 0.0
    while runs < protocol.warmup_runs or clock() - start < protocol.warmup_s:
        busy += timer(run, 1)
        runs += 1
        if clock() - start >= protocol.max_time_s:  # a very slow model: do not warm up forever
            break
    return busy / runs, runs, clock() - start


def _sample(
    run: Callable[[], object], k: int, protocol: Protocol, timer: Timer, clock: Callable[[], float]
) -> tuple[list[float], float, bool]:
    """Collect per-run latencies (ms), k runs per sample, until both stop thresholds hold.

    Returns (samples, elapsed s, capped) where ``capped`` means ``max_time_s`` ended it first.
    """
    samples: list[float] = []
    start = clock()
    while True:
        samples.append(timer(run, k) * 1e3 / k)
        elapsed = clock() - start
        if len(samples) >= protocol.min_samples and elapsed >= protocol.min_time_s:
            return samples, elapsed, False
        if elapsed >= protocol.max_time_s:
            return samples, elapsed, True


def relative_iqr(stats: dict[str, float]) -> float:
    return stats["iqr_ms"] / stats["median_ms"] if stats["median_ms"] > 0 else math.inf


@dataclass
class _Attempt:
    samples: list[float]
    stats: dict[str, Any]
    capped: bool
    rel_iqr: float
    cpu_share: float | None  # CPU time the measuring thread got / wall time (None: not known)

    def badness(self, protocol: Protocol) -> float:
        """How far the worst stability criterion is violated (<= 1: stable)."""
        worst = self.rel_iqr / protocol.unstable_iqr if protocol.unstable_iqr > 0 else 0.0
        if self.cpu_share is not None and protocol.min_cpu_share > 0:
            worst = max(worst, protocol.min_cpu_share / max(self.cpu_share, 1e-9))
        return worst

    def reason(self, protocol: Protocol) -> str:
        why = []
        if self.rel_iqr > protocol.unstable_iqr:
            why.append(f"IQR/median {self.rel_iqr:.1%} > {protocol.unstable_iqr:.0%}")
        if self.cpu_share is not None and self.cpu_share < protocol.min_cpu_share:
            why.append(
                f"the measuring thread got {self.cpu_share:.0%} of a CPU core "
                f"(< {protocol.min_cpu_share:.0%}): other processes competed for it"
            )
        return "; ".join(why)


def run_protocol(
    run: Callable[[], object],
    protocol: Protocol,
    backend: str,
    clock: Callable[[], float] = time.perf_counter,
    timer: Timer | None = None,
    cpu_time: Callable[[], float] | None = None,
) -> Measurement:
    """Warm up, sample and summarise ``run`` (one inference) under ``protocol``.

    ``clock`` measures the phases' wall time (and, without ``timer``, the runs); ``timer`` lets
    a GPU backend time batches of asynchronous runs with device events. ``cpu_time`` (e.g.
    ``time.thread_time``, for a run that computes in the calling thread) lets the protocol see
    preemption: a uniform slow-down by a competing process that IQR alone cannot see.

    An attempt is stable when IQR/median <= ``protocol.unstable_iqr`` and (with ``cpu_time``)
    the thread got at least ``protocol.min_cpu_share`` of a core. Otherwise the steady state is
    sampled again, up to ``protocol.max_retries`` times; if no attempt is stable, the most
    stable one is returned with status ``unstable`` and its ``unstable_reason``.

    Example::

        >>> m = run_protocol(lambda: sum(range(1000)), Protocol.quick(), "python")
        >>> m.n >= 16 and m.status in ("ok", "unstable")
        True
    """
    timer = timer or clock_timer(clock)
    with _gc_paused():
        mean_run_s, warmup_runs, warmup_s = _warm_up(run, protocol, timer, clock)
        # batch runs so one sample lasts at least min_sample_ms (timer resolution, loop overhead)
        k = max(1, math.ceil(protocol.min_sample_ms / 1e3 / max(mean_run_s, 1e-9)))
        steady_s = 0.0
        attempts: list[_Attempt] = []
        for _attempt in range(protocol.max_retries + 1):
            cpu0 = cpu_time() if cpu_time else 0.0
            samples, elapsed, capped = _sample(run, k, protocol, timer, clock)
            share = (cpu_time() - cpu0) / elapsed if cpu_time and elapsed > 0 else None
            steady_s += elapsed
            stats = summarize(samples)
            attempts.append(_Attempt(samples, stats, capped, relative_iqr(stats), share))
            if attempts[-1].badness(protocol) <= 1.0:
                break
    best = min(attempts, key=lambda a: a.badness(protocol))
    stable = best.badness(protocol) <= 1.0
    extra: dict[str, object] = {
        "rel_iqr_attempts": [round(a.rel_iqr, 4) for a in attempts],
        "capped": best.capped,  # max_time_s ended sampling before min_samples was reached
    }
    return Measurement(
        status="ok" if stable else "unstable",
        backend=backend,
        runs_per_sample=k,
        samples_ms=best.samples,
        steady_s=steady_s,
        retries=len(attempts) - 1,
        protocol=protocol.to_dict(),
        extra=extra,
        warmup_s=warmup_s,
        warmup_runs=warmup_runs,
        cpu_share_attempts=[round(a.cpu_share or 0.0, 3) for a in attempts] if cpu_time is not None else None,
        unstable_reason=None if stable else best.reason(protocol),
        **best.stats,
    )
