"""The measurement protocol shared by every backend (DESIGN.md).

1. phases timed separately (load, first run, steady state) -- the backend times load and
   first run, this module the rest;
2. warm-up by time and iterations;
3. stop on both a minimum sample count and a minimum duration; runs shorter than
   ``min_sample_ms`` are batched k per sample;
4. n, median, mean, min, p90, p99, IQR, CV; ``unstable`` after retries when IQR/median is high.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from autotune.devices._base import Measurement, Protocol


def summarize(samples_ms: list[float]) -> dict[str, float]:
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


def _warm_up(run: Callable[[], object], protocol: Protocol, clock: Callable[[], float]) -> float:
    """Run until both warm-up thresholds are met; return the mean run time in seconds."""
    start = clock()
    runs = 0
    while runs < protocol.warmup_runs or clock() - start < protocol.warmup_s:
        run()
        runs += 1
    return (clock() - start) / runs


def _sample(
    run: Callable[[], object], k: int, protocol: Protocol, clock: Callable[[], float]
) -> tuple[list[float], float]:
    """Collect per-run latencies (ms), k runs per sample, until both stop thresholds hold."""
    samples: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        for _ in range(k):
            run()
        samples.append((clock() - t0) * 1e3 / k)
        elapsed = clock() - start
        enough = len(samples) >= protocol.min_samples and elapsed >= protocol.min_time_s
        if enough or elapsed >= protocol.max_time_s:
            return samples, elapsed


def run_protocol(
    run: Callable[[], object],
    protocol: Protocol,
    backend: str,
    clock: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Warm up, sample and summarise ``run`` (one inference) under ``protocol``.

    ``clock`` lets GPU backends pass a synchronising timer. Retries when IQR/median exceeds
    ``protocol.unstable_iqr``; the last attempt is kept and flagged ``unstable``.
    """
    mean_run_s = _warm_up(run, protocol, clock)
    # batch runs so one sample lasts at least min_sample_ms (timer resolution, loop overhead)
    k = max(1, math.ceil(protocol.min_sample_ms / 1e3 / max(mean_run_s, 1e-9)))
    steady_s = 0.0
    for attempt in range(protocol.max_retries + 1):
        samples, elapsed = _sample(run, k, protocol, clock)
        steady_s += elapsed
        stats = summarize(samples)
        stable = stats["iqr_ms"] <= protocol.unstable_iqr * stats["median_ms"]
        if stable:
            break
    return Measurement(
        status="ok" if stable else "unstable",
        backend=backend,
        runs_per_sample=k,
        samples_ms=samples,
        steady_s=steady_s,
        retries=attempt,
        protocol=protocol.to_dict(),
        **stats,
    )
