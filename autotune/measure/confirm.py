"""Deciding on noisy latencies: noise-aware dominance, the choice of best, the confirmation round.

A latency here is a figure with an interval: the study's latency (reference latency x ratio)
and its relative resolution, the half-width of the ratio's 95% interval over the ratio.

* **Noise-equivalent**: two latencies whose intervals overlap are equally fast; the difference
  is inside the two candidates' measurement resolution and does not count.
* **Dominance**: A dominates B when it is no worse on accuracy (max), latency (min, noise-aware)
  and size (min), and better on one that counts.
* **Best**: the most accurate feasible candidate; among equally accurate ones, those as fast
  as the fastest (noise-equivalent) are decided by size, then latency.
* **Confirmation round**: the best and every Pareto member within 15% of the budget are
  measured again with a longer interleaved protocol (:func:`confirmation_protocol`); the best is
  chosen on the confirmed figures; one whose confirmed interval straddles the budget is
  **borderline**.
* **Feasibility** (:class:`autotune.budget.Limit`): a relative budget (``50%``) is decided on the
  ratio and its interval alone, an absolute one on the derived latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from autotune.budget import Limit
from autotune.records import Measurement, Protocol

#: Pareto members this close to the budget (share of it) are confirmed
CONFIRM_WITHIN = 0.15


@dataclass(frozen=True)
class Figure:
    """What the decisions need of a candidate."""

    key: int  # the trial number
    accuracy: float
    latency_ms: float
    size_bytes: float
    resolution: float = 0.0  # relative half-width of the latency's 95% interval
    ratio: float | None = None  # to the reference (paired timing)
    ratio_ci: tuple[float, float] | None = None  # the ratio's 95% interval

    @property
    def bounds(self) -> tuple[float, float]:
        """The 95% interval relative to the figure (e.g. 0.98, 1.03): the ratio's when known."""
        if self.ratio and self.ratio_ci:
            return self.ratio_ci[0] / self.ratio, self.ratio_ci[1] / self.ratio
        return 1 - self.resolution, 1 + self.resolution

    @property
    def interval(self) -> tuple[float, float]:
        low, high = self.bounds
        return self.latency_ms * low, self.latency_ms * high


def figure(key: int, accuracy: float, latency_ms: float, size_bytes: float, m: Measurement | None) -> Figure:
    """A Figure from a trial's values and measurement (no interval when unpaired)."""
    if m is None or m.ratio is None:
        return Figure(key, accuracy, latency_ms, size_bytes)
    res = m.ratio_resolution if m.ratio_ci else 0.0
    ci = (float(m.ratio_ci[0]), float(m.ratio_ci[1])) if m.ratio_ci else None
    return Figure(key, accuracy, latency_ms, size_bytes, res if res == res else 0.0, m.ratio, ci)  # nan -> 0


def equally_fast(a: Figure, b: Figure) -> bool:
    """Whether the latency difference is inside the two candidates' resolution."""
    return abs(a.latency_ms - b.latency_ms) <= a.latency_ms * a.resolution + b.latency_ms * b.resolution


def dominates(a: Figure, b: Figure) -> bool:
    tie = equally_fast(a, b)
    if a.accuracy < b.accuracy or a.size_bytes > b.size_bytes or (not tie and a.latency_ms > b.latency_ms):
        return False
    return a.accuracy > b.accuracy or a.size_bytes < b.size_bytes or (not tie and a.latency_ms < b.latency_ms)


def pareto(figures: Sequence[Figure]) -> list[Figure]:
    """The members no other figure dominates (noise-aware), fastest first."""
    front = [f for f in figures if not any(dominates(g, f) for g in figures if g is not f)]
    return sorted(front, key=lambda f: f.latency_ms)


def best(figures: Sequence[Figure]) -> Figure | None:
    """Accuracy first; then, among the equally fast as the fastest, size, then latency."""
    if not figures:
        return None
    top = max(f.accuracy for f in figures)
    tied = [f for f in figures if f.accuracy == top]
    fastest = min(tied, key=lambda f: f.latency_ms)
    return min((f for f in tied if equally_fast(f, fastest)), key=lambda f: (f.size_bytes, f.latency_ms))


def within(f: Figure, limit: Limit) -> bool:
    """Whether the figure meets the budget (a relative one: on its ratio alone)."""
    return limit.within(f.latency_ms, f.ratio)


def to_confirm(front: Sequence[Figure], chosen: Figure | None, limit: Limit) -> list[int]:
    """Trial numbers to confirm: the best, and Pareto members within 15% of the budget."""
    keys = [chosen.key] if chosen is not None else []
    keys += [f.key for f in front if abs(limit.share(f.latency_ms, f.ratio)) <= CONFIRM_WITHIN]
    return list(dict.fromkeys(keys))


def borderline(f: Figure, limit: Limit) -> bool:
    """The confirmed interval (the ratio's, for a relative budget) straddles the budget:
    feasible or not is inside the noise."""
    return limit.straddles(f.latency_ms, f.ratio, *f.bounds)


def confirmation_protocol(p: Protocol) -> Protocol:
    """A longer interleaved protocol: three times the pairs and the time, twice the sessions,
    a finer resolution (docs/measurement.md, "Sessions")."""
    return replace(
        p,
        sessions=p.sessions * 2,
        max_sessions=p.max_sessions * 2,
        session_resolution=p.session_resolution / 2,
        min_samples=p.min_samples * 3,
        min_time_s=p.min_time_s * 3,
        pair_min_time_s=p.pair_min_time_s * 3,
        max_time_s=max(p.max_time_s, max(p.min_time_s, p.pair_min_time_s) * 3 * 4),
        ratio_resolution=p.ratio_resolution / 2,
    )


def run_round(
    result: Any, measurer: Any, inputs: dict[str, Any], limit: Limit, protocol: Protocol
) -> dict[int, dict[str, Any]]:
    """Measure the best and the Pareto members near the budget again with a longer protocol.

    ``result`` is a ParetoSet, ``measurer`` the study's Measurer. Returns, per trial number, the
    confirmed latency, ratio, interval, resolution and whether it is borderline (the study
    stores them: ``autotune.study.save_confirmed``).
    """

    def fig(t: Any) -> Figure:
        return figure(t.number, t.accuracy, t.latency_ms, t.size_bytes, t.measurement)

    keys = to_confirm([fig(t) for t in result.pareto], fig(result.best) if result.best else None, limit)
    longer = confirmation_protocol(protocol)
    out: dict[int, dict[str, Any]] = {}
    for t in result.trials:
        if t.number not in keys:
            continue
        # local_file(): fetched from the study's artifact store when another worker built it
        m = measurer.measure(t.local_file(), inputs, t.candidate.runtime, protocol=longer)
        if not m.usable:
            continue
        f = figure(t.number, t.accuracy, measurer.latency_ms(m, t.candidate.runtime), t.size_bytes, m)
        out[t.number] = {
            "latency_ms": f.latency_ms,
            "ratio": m.ratio,
            "ratio_ci": m.ratio_ci,
            "resolution": f.resolution,
            "borderline": borderline(f, limit),
            "within": within(f, limit),
            "status": m.status,
        }
    return out
