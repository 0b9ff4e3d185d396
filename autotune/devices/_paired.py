"""Paired timing: a candidate and a reference artifact in alternating blocks, in one session.

Why: a host's speed shifts for seconds at a time (other processes, frequency scaling, a noisy
neighbour VM). Both halves of a pair run within a few ms of each other on the same host, so the
per-pair ratio cancels most of what moves the absolute numbers (in the experiment behind this
design, a CPU hog toggling on both cores spread the absolute median 63.7% over fresh sessions,
the paired ratio 0.9%; this project's own figures are in the README's "Measurement" section).

* Blocks alternate A B | B A | A B ..., so a trend inside a pair does not bias the ratio one way.
* A block is k back-to-back runs, k chosen after the warm-up so a block lasts about
  ``protocol.pair_block_ms`` (1 ms; each side its own k); per-run times are block time / k.
  Short blocks: many pairs, and few of them cut by the scheduler.
* **Clean pairs**: with ``cpu_time`` (one thread computing in the caller's thread), a block whose
  thread got less than :data:`CLEAN_SHARE` (95%) of a core (CPU time / wall time) was preempted
  by another process; its pair is left out. Without ``cpu_time`` every pair is clean.
* **Quiet pairs**: a process on a sibling core slows both models without preempting them, and
  not by the same factor (int8 and FP32 kernels lean on different parts of the core), so the
  ratio itself moves with the load. The ratio is therefore taken from the clean pairs whose
  total time (candidate + reference per run) is within :data:`QUIET_TOLERANCE` (10%) of the
  session's fast end (its :data:`QUIET_QUANTILE`-th percentile): the host's quiet moments.
* Estimator: the median of the quiet pairs' wall-clock ratios candidate / reference, with the
  distribution-free 95% interval of a median (order statistics at ranks n/2 -+ 0.98 sqrt(n)):
  :func:`median_ci`. The absolute statistics are the wall times of the clean pairs.
* Stop: at least ``protocol.min_samples`` pairs, :data:`MIN_QUIET` quiet ones and
  ``protocol.pair_min_time_s`` seconds (or ``max_time_s``, flagged ``capped``). While the
  interval is wider than +-``protocol.ratio_resolution`` of the ratio, another round of pairs
  is added (pooled), up to ``protocol.max_retries`` rounds; still wider: ``unstable``.

Like :mod:`autotune.devices._protocol`, everything here is a pure function of ``run``,
``reference_run``, a clock and a timer, tested with a fake clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from autotune.devices._protocol import Timer, _gc_paused, clock_timer, summarize
from autotune.records import LatencyStats, Measurement, Protocol

#: per-pair ratios kept in ``extra["ratios"]`` (evenly spaced order statistics)
MAX_STORED_RATIOS = 256
#: a block whose thread got less of a core than this was preempted: its pair is left out
CLEAN_SHARE = 0.95
#: quiet pairs: total time within this share of the session's fast end ...
QUIET_TOLERANCE = 0.10
#: ... the fast end being this percentile of the clean pairs' total times
QUIET_QUANTILE = 10.0
#: never stop with fewer quiet pairs than this
MIN_QUIET = 16


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


def quiet_pairs(a: np.ndarray, b: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """The pairs the ratio is taken from: clean, and within QUIET_TOLERANCE of the fast end."""
    total = a + b
    if clean.sum() < MIN_QUIET:  # preempted all the time: no better pairs to take it from
        clean = np.ones_like(clean)
    fast_end = np.percentile(total[clean], QUIET_QUANTILE)
    return clean & (total <= fast_end * (1 + QUIET_TOLERANCE))


def _sample_pairs(
    run: Callable[[], object],
    reference_run: Callable[[], object],
    ka: int,
    kb: int,
    protocol: Protocol,
    timer: Timer,
    clock: Callable[[], float],
    cpu_time: Callable[[], float] | None,
) -> tuple[list[float], list[float], list[bool], float, bool]:
    """Per pair: candidate and reference per-run wall ms, and whether both blocks were clean;
    (a, b, clean, elapsed, capped)."""
    a: list[float] = []
    b: list[float] = []
    clean: list[bool] = []
    start = clock()

    def block(fn: Callable[[], object], k: int) -> tuple[float, bool]:
        c0 = cpu_time() if cpu_time else 0.0
        wall = timer(fn, k)
        return wall, (cpu_time() - c0 >= CLEAN_SHARE * wall if cpu_time else True)

    while True:
        if len(a) % 2 == 0:
            ta, ca = block(run, ka)
            tb, cb = block(reference_run, kb)
        else:
            tb, cb = block(reference_run, kb)
            ta, ca = block(run, ka)
        a.append(ta * 1e3 / ka)
        b.append(tb * 1e3 / kb)
        clean.append(ca and cb)
        elapsed = clock() - start
        if len(a) >= protocol.min_samples and elapsed >= protocol.pair_min_time_s and len(a) % 8 == 0:
            # enough quiet pairs (checked every 8 pairs: a percentile is not free)
            if quiet_pairs(np.asarray(a), np.asarray(b), np.asarray(clean)).sum() >= MIN_QUIET:
                return a, b, clean, elapsed, False
        if elapsed >= protocol.max_time_s:
            return a, b, clean, elapsed, True


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

    ``cpu_time`` (``time.thread_time`` for a run that computes in the calling thread): blocks
    whose thread was preempted are left out (see the module docstring).

    The Measurement's statistics (median_ms, p90_ms, ...) are the candidate's per-run wall
    times over the clean pairs (n counts them); ``ratio``/``ratio_ci`` the median ratio of the
    quiet pairs and its 95% interval; ``reference_median_ms`` the reference's median in the
    same window.

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
        c: list[bool] = []
        resolutions: list[float] = []
        capped = False
        for _round in range(protocol.max_retries + 1):
            more_a, more_b, more_c, elapsed, capped = _sample_pairs(
                run, reference_run, ka, kb, protocol, timer, clock, cpu_time
            )
            a += more_a
            b += more_b
            c += more_c
            steady_s += elapsed
            wall_a, wall_b, clean = np.asarray(a), np.asarray(b), np.asarray(c)
            quiet = quiet_pairs(wall_a, wall_b, clean)
            ratios = wall_a[quiet] / wall_b[quiet]
            ratio, low, high = median_ci(ratios)
            resolutions.append((high - low) / 2 / ratio if ratio > 0 else math.inf)
            if resolutions[-1] <= protocol.ratio_resolution:
                break
    stable = resolutions[-1] <= protocol.ratio_resolution
    q25, q75 = np.percentile(ratios, [25, 75]) if ratios.size else (math.nan, math.nan)
    kept = clean if clean.sum() >= MIN_QUIET else np.ones_like(clean)
    reference = summarize(wall_b[kept].tolist())
    extra: dict[str, object] = {
        "ratio_clock": "wall, quiet pairs" + (" (clean by thread CPU time)" if cpu_time else ""),
        "pairs": len(a),
        "clean_pairs": int(clean.sum()),
        "quiet_pairs": int(quiet.sum()),
        "block_runs": [ka, kb],  # runs per block: candidate, reference
        "resolution_rounds": [round(r, 4) for r in resolutions],  # interval half-width / ratio
        "ratio_rel_iqr": round(float((q75 - q25) / ratio), 4) if ratio > 0 else None,
        "capped": capped,
        "ratios": _kept(ratios),
    }
    unstable_reason = None
    if not stable:
        unstable_reason = (
            f"the ratio's 95% interval is +-{resolutions[-1]:.1%} after {len(a)} pairs "
            f"({int(quiet.sum())} quiet; > +-{protocol.ratio_resolution:.0%}): the candidate and the "
            "reference did not keep a steady proportion"
        )
    return Measurement(
        status="ok" if stable else "unstable",
        backend=backend,
        runs_per_sample=ka,
        samples_ms=wall_a[kept].tolist(),
        steady_s=steady_s,
        retries=len(resolutions) - 1,
        protocol=protocol.to_dict(),
        extra=extra,
        ratio=ratio,
        ratio_ci=[low, high],
        reference_median_ms=reference["median_ms"],
        interleaved=True,
        warmup_s=warmup_s,
        warmup_runs=warmup_runs,
        unstable_reason=unstable_reason,
        reference_stats=LatencyStats.from_dict({k: v for k, v in reference.items() if k != "n"}),
        **summarize(wall_a[kept].tolist()),
    )
