"""Paired timing over several independent sessions, and the interval over them.

Why: one onnxruntime session (an engine, a CUDA graph) keeps its own speed for its whole life,
a few percent and on some hosts tens of percent away from the next one's (docs/measurement.md,
"Sessions"). One session's order-statistic interval (:func:`autotune.devices._paired.median_ci`)
describes only that session: five fresh processes of the same pair read up to 22% apart with
intervals of +-0.4%. So a decision-relevant ratio is timed in ``protocol.sessions`` or more
independent pairs of sessions (candidate and reference both re-created), each a short paired
window (:func:`autotune.devices._paired.run_paired`), and its interval is taken over them:

* each session gives one ratio r_i (the median of its quiet pairs) and its within-session
  interval;
* the estimate is the geometric mean of the r_i; the interval is a Student-t interval on
  log r_i with S-1 degrees of freedom (a random-effects interval: the between-session spread
  includes the within-session noise), never narrower than the within-session intervals allow
  for the mean of S sessions. Not a bootstrap over sessions: resampling 3-6 values gives
  intervals far too narrow (a percentile bootstrap of 3 values covers about 75%, not 95%);
* sessions are added, up to ``protocol.max_sessions``, until the interval's half-width is
  within ``protocol.session_resolution`` of the ratio; still wider: ``unstable``.

``sessions == 1`` is the single-session protocol of :mod:`._paired`, unchanged.

Like :mod:`._paired`, everything here is a pure function of callables, tested without a runtime.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from autotune.devices._paired import run_paired
from autotune.devices._protocol import Timer, summarize
from autotune.records import LatencyStats, Measurement, Protocol

#: two-sided 95% Student-t quantiles by degrees of freedom (1..30); beyond: 1.96
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

#: one pair of fresh sessions: (run, reference_run, close); close releases both
SessionPair = tuple[Callable[[], object], Callable[[], object], Callable[[], None]]


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def session_interval(
    ratios: Sequence[float], within: Sequence[Sequence[float]] | None = None
) -> tuple[float, float, float]:
    """(estimate, low, high): the ratio over sessions and its 95% interval.

    ``ratios``: one ratio per session; ``within``: each session's own [low, high] interval.
    One session: its ratio and its own interval (nothing is known about the others).

    Example::

        >>> est, lo, hi = session_interval([0.20, 0.21, 0.19])
        >>> lo < 0.2 < hi and round(est, 3)
        0.2
    """
    r = np.log(np.asarray(ratios, dtype=np.float64))
    s = r.size
    if s == 0:
        return math.nan, math.nan, math.nan
    centre = float(r.mean())
    # the within-session intervals' share: their half-widths (in log) combined for a mean of S
    w = 0.0
    if within:
        halves = [(math.log(hi) - math.log(lo)) / 2 for lo, hi in within if lo > 0 and hi > 0]
        w = math.sqrt(sum(h * h for h in halves)) / s if halves else 0.0
    if s == 1:
        if within:
            lo, hi = within[0]
            return float(ratios[0]), float(lo), float(hi)
        return float(ratios[0]), float(ratios[0]), float(ratios[0])
    between = t975(s - 1) * float(r.std(ddof=1)) / math.sqrt(s)
    half = max(between, w)
    return math.exp(centre), math.exp(centre - half), math.exp(centre + half)


def session_protocol(p: Protocol) -> Protocol:
    """The protocol of one session among several: a shorter window, no pooled rounds (more
    sessions, not more pairs of the same session, are what narrow the interval)."""
    return replace(
        p,
        warmup_s=min(p.warmup_s, p.session_warmup_s),
        pair_min_time_s=min(p.pair_min_time_s, p.session_pair_time_s),
        max_retries=0,
    )


def run_sessions(
    open_pair: Callable[[], SessionPair],
    protocol: Protocol,
    backend: str,
    timer: Timer | None = None,
    cpu_time: Callable[[], float] | None = None,
    measure: Callable[..., Measurement] = run_paired,
) -> Measurement:
    """Time a candidate against a reference in ``protocol.sessions`` or more fresh sessions.

    ``open_pair()`` creates both sessions anew and returns their runs and a ``close``; it may
    raise (a load failure: the caller turns it into a result). ``measure`` is
    :func:`run_paired` (injected in tests). With ``protocol.sessions <= 1`` this is one call
    of ``measure`` under ``protocol`` itself.

    The result's ``ratio``/``ratio_ci`` are the session-level figures
    (:func:`session_interval`), ``ratio_ci_within`` the first session's own interval (what a
    single session would have claimed), ``session_ratios`` one ratio per session; the
    statistics (median_ms, ...) pool every session's clean pairs.
    """
    if protocol.sessions <= 1:
        run, reference_run, close = open_pair()
        try:
            return measure(run, reference_run, protocol, backend, timer=timer, cpu_time=cpu_time)
        finally:
            close()
    one = session_protocol(protocol)
    parts: list[Measurement] = []
    est = lo = hi = math.nan
    while len(parts) < max(protocol.sessions, protocol.max_sessions):
        run, reference_run, close = open_pair()
        try:
            parts.append(measure(run, reference_run, one, backend, timer=timer, cpu_time=cpu_time))
        finally:
            close()
        good = [m for m in parts if m.ratio is not None and m.ratio > 0 and m.ratio_ci]
        if len(good) < protocol.sessions:
            continue
        est, lo, hi = session_interval([m.ratio for m in good], [m.ratio_ci for m in good])  # type: ignore[misc]
        if (hi - lo) / 2 / est <= protocol.session_resolution:
            break
    return _combined(parts, protocol, backend, est, lo, hi)


def _combined(
    parts: list[Measurement], protocol: Protocol, backend: str, est: float, lo: float, hi: float
) -> Measurement:
    """One Measurement from the sessions' (pooled statistics, the session-level interval)."""
    good = [m for m in parts if m.ratio is not None and m.ratio_ci]
    if not good or math.isnan(est):
        worst = parts[-1]
        worst.unstable_reason = worst.unstable_reason or "fewer usable sessions than protocol.sessions"
        worst.status = "unstable" if worst.usable else worst.status
        return worst
    samples = [v for m in good for v in m.samples_ms]
    ref_medians = [m.reference_median_ms for m in good if m.reference_median_ms]
    resolution = (hi - lo) / 2 / est
    stable = resolution <= protocol.session_resolution
    ratios = [float(m.ratio) for m in good]  # type: ignore[arg-type]
    extra: dict[str, object] = {
        "estimator": "geometric mean over sessions, t interval on log ratios",
        "session_spread": round(max(ratios) / min(ratios) - 1, 4),
        # each session's own diagnostics (pair counts, block sizes, ...), its ratios left out
        "per_session": [{k: v for k, v in m.extra.items() if k != "ratios"} for m in good],
    }
    reason = None
    if not stable:
        reason = (
            f"the ratio's 95% interval over {len(good)} sessions is +-{resolution:.1%} "
            f"(> +-{protocol.session_resolution:.0%}): sessions read {min(ratios):.4f}-{max(ratios):.4f}"
        )
    first = good[0]
    return Measurement(
        status="ok" if stable else "unstable",
        backend=backend,
        runs_per_sample=first.runs_per_sample,
        samples_ms=samples,
        steady_s=sum(m.steady_s for m in parts),
        retries=len(parts) - 1,
        protocol=protocol.to_dict(),
        extra=extra,
        ratio=est,
        ratio_ci=[lo, hi],
        ratio_ci_within=list(first.ratio_ci or []),
        session_ratios=[round(r, 6) for r in ratios],
        reference_median_ms=float(np.median(ref_medians)) if ref_medians else None,
        interleaved=True,
        warmup_s=sum(m.warmup_s or 0.0 for m in parts),
        warmup_runs=first.warmup_runs,
        unstable_reason=reason,
        reference_stats=_median_stats([m.reference_stats for m in good if m.reference_stats]),
        **summarize(samples),
    )


def _median_stats(stats: list[LatencyStats]) -> LatencyStats | None:
    """Per statistic, the median over the sessions (the reference's samples are not kept)."""
    if not stats:
        return None
    names = ("median_ms", "mean_ms", "min_ms", "p90_ms", "p99_ms", "iqr_ms", "cv")
    return LatencyStats.from_dict({k: float(np.median([getattr(s, k) for s in stats])) for k in names})
