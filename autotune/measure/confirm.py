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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

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

    @property
    def interval(self) -> tuple[float, float]:
        return self.latency_ms * (1 - self.resolution), self.latency_ms * (1 + self.resolution)


def figure(key: int, accuracy: float, latency_ms: float, size_bytes: float, m: Measurement | None) -> Figure:
    """A Figure from a trial's values and measurement (no interval when unpaired)."""
    res = m.ratio_resolution if m is not None and m.ratio is not None and m.ratio_ci else 0.0
    return Figure(key, accuracy, latency_ms, size_bytes, res if res == res else 0.0)  # nan -> 0


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


def to_confirm(front: Sequence[Figure], chosen: Figure | None, budget_ms: float) -> list[int]:
    """Trial numbers to confirm: the best, and Pareto members within 15% of the budget."""
    keys = [chosen.key] if chosen is not None else []
    keys += [f.key for f in front if abs(f.latency_ms - budget_ms) <= CONFIRM_WITHIN * budget_ms]
    return list(dict.fromkeys(keys))


def borderline(f: Figure, budget_ms: float) -> bool:
    """The confirmed interval straddles the budget: feasible or not is inside the noise."""
    low, high = f.interval
    return low <= budget_ms < high


def confirmation_protocol(p: Protocol) -> Protocol:
    """A longer interleaved protocol: three times the pairs and the time, a finer resolution."""
    return replace(
        p,
        min_samples=p.min_samples * 3,
        min_time_s=p.min_time_s * 3,
        max_time_s=max(p.max_time_s, p.min_time_s * 3 * 4),
        ratio_resolution=p.ratio_resolution / 2,
    )


#: study user attribute holding the confirmation round's figures, by trial number
CONFIRMED_KEY = "confirmed"


def run_round(
    result: Any, measurer: Any, inputs: dict[str, Any], budget_ms: float, protocol: Protocol
) -> dict[str, dict[str, Any]]:
    """Measure the best and the Pareto members near the budget again with a longer protocol.

    ``result`` is a ParetoSet, ``measurer`` the study's Measurer. Returns, per trial number (as
    a string, for JSON), the confirmed latency, ratio, interval, resolution and whether it is
    borderline.
    """

    def fig(t: Any) -> Figure:
        return figure(t.number, t.accuracy, t.latency_ms, t.size_bytes, t.measurement)

    keys = to_confirm([fig(t) for t in result.pareto], fig(result.best) if result.best else None, budget_ms)
    longer = confirmation_protocol(protocol)
    out: dict[str, dict[str, Any]] = {}
    for t in result.trials:
        if t.number not in keys:
            continue
        m = measurer.measure(t.artifact_path, inputs, t.candidate.runtime, protocol=longer)
        if not m.usable:
            continue
        f = figure(t.number, t.accuracy, measurer.latency_ms(m, t.candidate.runtime), t.size_bytes, m)
        out[str(t.number)] = {
            "latency_ms": f.latency_ms,
            "ratio": m.ratio,
            "ratio_ci": m.ratio_ci,
            "resolution": f.resolution,
            "borderline": borderline(f, budget_ms),
            "status": m.status,
        }
    return out
