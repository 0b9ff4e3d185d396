"""The reference's latency over a study, and ratios for backends that cannot time pairs.

Every paired measurement is also one *window* on the reference: its median in that session.
The reference latency of the study is the **median of the window medians** (per runtime
options), so one window taken while the host was busy does not set it; it is re-checked with
every window, and :attr:`ReferenceLatency.spread` says how far the windows disagree. A study's
latency for a candidate is this estimate x the candidate's ratio (docs/measurement.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from autotune.devices import median_ci
from autotune.records import Measurement


@dataclass
class ReferenceLatency:
    """Window medians of the reference (ms) and their estimator."""

    windows: list[float] = field(default_factory=list)

    def add(self, median_ms: float | None) -> None:
        if median_ms is not None and math.isfinite(median_ms) and median_ms > 0:
            self.windows.append(float(median_ms))

    @property
    def estimate_ms(self) -> float:
        """Median of the window medians (nan before the first window)."""
        return float(np.median(self.windows)) if self.windows else math.nan

    @property
    def spread(self) -> float:
        """max/min - 1 over the windows: how much the host's speed moved during the study."""
        return max(self.windows) / min(self.windows) - 1 if self.windows else math.nan

    def to_dict(self) -> dict[str, float | int]:
        return {
            "estimate_ms": round(self.estimate_ms, 5),
            "windows": len(self.windows),
            "spread": round(self.spread, 4),
            "estimator": "median of window medians",  # type: ignore[dict-item]
        }


def pair_separately(m: Measurement, reference: Measurement, reference_sha256: str) -> Measurement:
    """Ratio of two separate measurements, for a backend without paired timing.

    The interval is the ratio of the medians' order-statistic intervals (candidate low /
    reference high, candidate high / reference low): wider than a paired one, as it should be.
    """
    if not (m.usable and reference.usable):
        if m.usable:  # the candidate is fine, the reference is not: say so
            m.extra["reference_error"] = f"{reference.status}: {reference.error}"
        return m
    _, a_lo, a_hi = median_ci(m.samples_ms)
    _, b_lo, b_hi = median_ci(reference.samples_ms)
    m.ratio = m.median_ms / reference.median_ms
    m.ratio_ci = [a_lo / b_hi, a_hi / b_lo]
    m.reference_median_ms = reference.median_ms
    m.reference_sha256 = reference_sha256
    m.interleaved = False  # two sessions: a wider interval than interleaved pairs
    return m
