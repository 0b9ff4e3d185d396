"""Paired timing: a candidate and a reference artifact in alternating blocks, in one session.

Why: a host's speed shifts for seconds at a time (other processes, frequency scaling, a noisy
neighbour VM). Both halves of a pair run within ~20 ms of each other on the same host, so the
per-pair ratio cancels what moves the absolute numbers (in the experiment behind this design,
a CPU hog toggling on both cores spread the absolute median 63.7% over fresh sessions, the
paired ratio 0.9%; this project's own figures are in the README's "Measurement" section).

* Blocks alternate A B | B A | A B ..., so a trend inside a pair does not bias the ratio one way.
* A block is k back-to-back runs, k chosen after the warm-up so a block lasts about
  ``protocol.pair_block_ms`` (each side its own k); per-run times are block time / k.
* Stop: at least ``protocol.min_samples`` pairs and ``protocol.min_time_s`` seconds (or
  ``max_time_s``, flagged ``capped``).
* With ``cpu_time`` (one thread computing in the caller's thread) the ratio is taken from the
  thread's CPU time per block: time spent preempted counts for neither side.
* Estimator: the median of the per-pair ratios candidate / reference, with the distribution-free
  95% interval of a median (order statistics at ranks n/2 -+ 0.98 sqrt(n)): :func:`median_ci`.
* Stability is judged on the ratio, not on the absolute times that a busy host widens: while
  the interval is wider than +-``protocol.ratio_resolution`` of the ratio, another round of
  pairs is added (pooled: every pair is a valid pair), up to ``protocol.max_retries`` rounds;
  still wider, the result is flagged ``unstable``. (Preemption inside one block makes single
  ratios scatter under load, but their median stays put: the interval says how well.)

Like :mod:`autotune.devices._protocol`, everything here is a pure function of ``run``,
``reference_run``, a clock and a timer, tested with a fake clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from autotune.devices._protocol import Timer, _gc_paused, clock_timer, summarize
from autotune.records import Measurement, Protocol

#: per-pair ratios kept in ``extra["ratios"]`` (evenly spaced order statistics)
MAX_STORED_RATIOS = 256


def median_ci(values: list[float] | np.ndarray, z: float = 1.96) -> tuple[float, float, float]:
    """(median, low, high): the order-statistic confidence interval of the median.

    Distribution-free: the number of values below the median is Binomial(n, 1/2), so ranks
    n/2 -+ z sqrt(n)/2 bound it with the confidence of ``z`` (1.96: 95%).
    """
    a = np.sort(np.asarray(values, dtype=np.float64))
    n = a.size
    if n == 0:
        return math.nan, math.nan, math.nan
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)  # 1-based ranks j = floor(n/2 - half) ...
    hi = min(n - 1, math.ceil(1 + n / 2 + half) - 1)  # ... and k = ceil(1 + n/2 + half)
    return float(np.median(a)), float(a[lo]), float(a[hi])


def _warm_up_pair(
    run: Callable[[], object],
    reference_run: Callable[[], object],
    protocol: Protocol,
    timer: Timer,
    clock: Callable[[], float],
) -> tuple[float, float, int, float]:
    """Warm both up, alternating; return (mean run s, mean reference run s, runs each, wall s)."""
    start = clock()
    runs = 0
    busy_a = busy_b = 0.0
    while runs < protocol.warmup_runs or clock() - start < protocol.warmup_s:
        busy_a += timer(run, 1)
        busy_b += timer(reference_run, 1)
        runs += 1
        if clock() - start >= protocol.max_time_s:
            break
    return busy_a / runs, busy_b / runs, runs, clock() - start


def _sample_pairs(
    run: Callable[[], object],
    reference_run: Callable[[], object],
    ka: int,
    kb: int,
    protocol: Protocol,
    timer: Timer,
    clock: Callable[[], float],
    cpu_time: Callable[[], float] | None,
) -> tuple[list[float], list[float], list[float], float, bool]:
    """Per-pair: candidate and reference per-run ms, and the ratio; (a, b, ratios, elapsed, capped).

    With ``cpu_time`` the ratio is taken from the thread's CPU time in each block: time the
    thread was preempted (another process ran) then counts for neither side.
    """
    a: list[float] = []
    b: list[float] = []
    ratios: list[float] = []
    start = clock()

    def block(fn: Callable[[], object], k: int) -> tuple[float, float]:
        c0 = cpu_time() if cpu_time else 0.0
        wall = timer(fn, k)
        return wall, (cpu_time() - c0 if cpu_time else wall)

    while True:
        if len(a) % 2 == 0:
            ta, ca = block(run, ka)
            tb, cb = block(reference_run, kb)
        else:
            tb, cb = block(reference_run, kb)
            ta, ca = block(run, ka)
        a.append(ta * 1e3 / ka)
        b.append(tb * 1e3 / kb)
        ratios.append((ca / ka) / max(cb / kb, 1e-12))
        elapsed = clock() - start
        if len(a) >= protocol.min_samples and elapsed >= protocol.min_time_s:
            return a, b, ratios, elapsed, False
        if elapsed >= protocol.max_time_s:
            return a, b, ratios, elapsed, True


def _kept(values: np.ndarray) -> list[float]:
    if values.size <= MAX_STORED_RATIOS:
        return [round(float(v), 5) for v in values]
    idx = np.linspace(0, values.size - 1, MAX_STORED_RATIOS).round().astype(int)
    return [round(float(v), 5) for v in np.sort(values)[idx]]


def run_paired(
    run: Callable[[], object],
    reference_run: Callable[[], object],
    protocol: Protocol,
    backend: str,
    clock: Callable[[], float] = time.perf_counter,
    timer: Timer | None = None,
    cpu_time: Callable[[], float] | None = None,
) -> Measurement:
    """Time ``run`` (the candidate) interleaved with ``reference_run``; see the module docstring.

    ``cpu_time`` (``time.thread_time`` for a run that computes in the calling thread): the
    ratio is taken from CPU time per block, so preemption by other processes drops out of it;
    the absolute statistics stay wall-clock.

    The Measurement's statistics (median_ms, p90_ms, ...) are the candidate's per-run times;
    ``ratio``/``ratio_ci`` the median per-pair ratio and its 95% interval;
    ``reference_median_ms`` the reference's median in the same window.

    Example::

        >>> m = run_paired(lambda: sum(range(2000)), lambda: sum(range(1000)), Protocol.quick(), "py")
        >>> m.ratio > 1 and m.ratio_ci[0] <= m.ratio <= m.ratio_ci[1]
        True
    """
    timer = timer or clock_timer(clock)
    block_s = protocol.pair_block_ms / 1e3
    with _gc_paused():
        mean_a, mean_b, warmup_runs, warmup_s = _warm_up_pair(run, reference_run, protocol, timer, clock)
        ka = max(1, math.ceil(block_s / max(mean_a, 1e-9)))
        kb = max(1, math.ceil(block_s / max(mean_b, 1e-9)))
        steady_s = 0.0
        a: list[float] = []
        b: list[float] = []
        r: list[float] = []
        resolutions: list[float] = []
        capped = False
        for _round in range(protocol.max_retries + 1):
            more_a, more_b, more_r, elapsed, capped = _sample_pairs(
                run, reference_run, ka, kb, protocol, timer, clock, cpu_time
            )
            a += more_a
            b += more_b
            r += more_r
            steady_s += elapsed
            ratios = np.asarray(r)
            ratio, low, high = median_ci(ratios)
            resolutions.append((high - low) / 2 / ratio if ratio > 0 else math.inf)
            if resolutions[-1] <= protocol.ratio_resolution:
                break
    stable = resolutions[-1] <= protocol.ratio_resolution
    q25, q75 = np.percentile(ratios, [25, 75])
    reference = summarize(b)
    extra: dict[str, object] = {
        "paired": True,
        "ratio_clock": "thread CPU time" if cpu_time else "wall",
        "warmup_s": warmup_s,
        "warmup_runs": warmup_runs,
        "block_runs": [ka, kb],  # runs per block: candidate, reference
        "resolution_rounds": [round(r, 4) for r in resolutions],  # interval half-width / ratio
        "ratio_rel_iqr": round(float((q75 - q25) / ratio), 4) if ratio > 0 else None,
        "capped": capped,
        "reference_stats": {k: v for k, v in reference.items() if k != "n"},
        "ratios": _kept(ratios),
    }
    if not stable:
        extra["unstable_reason"] = (
            f"the ratio's 95% interval is +-{resolutions[-1]:.1%} after {len(a)} pairs "
            f"(> +-{protocol.ratio_resolution:.0%}): the candidate and the reference did not keep "
            "a steady proportion"
        )
    return Measurement(
        status="ok" if stable else "unstable",
        backend=backend,
        runs_per_sample=ka,
        samples_ms=a,
        steady_s=steady_s,
        retries=len(resolutions) - 1,
        protocol=protocol.to_dict(),
        extra=extra,
        ratio=ratio,
        ratio_ci=[low, high],
        reference_median_ms=reference["median_ms"],
        **summarize(a),
    )
