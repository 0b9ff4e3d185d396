"""Latency budgets: absolute (``10ms``, ``10 ms``, ``0.01s``, ``500us`` -> milliseconds) or
relative to the unmodified model's median latency on the target device (``50%``, ``0.5x``).

A relative budget means the same thing on every machine; it is resolved once the unmodified
model has been measured, and the resolved milliseconds are stored with the study.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from autotune.errors import UserError

_UNITS_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3}
_NUMBER = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"
_PATTERN = re.compile(rf"^\s*{_NUMBER}\s*(s|ms|us|µs)\s*$")
_RELATIVE = re.compile(rf"^\s*{_NUMBER}\s*(%|x)\s*$")
ACCEPTED = "a positive number with a unit: 10ms, 10 ms, 0.01s, 500us"
ACCEPTED_ANY = f"{ACCEPTED}, or a share of the unmodified model's latency: 50%, 0.5x"
#: the smallest budgets: below a microsecond (or a thousandth of the model) nothing is measured,
#: and the number would only name the study (1e-320ms was "9.99989e-318us")
MIN_MS = 1e-3
MIN_FRACTION = 1e-3


@dataclass(frozen=True)
class Budget:
    """A parsed ``--budget``: exactly one of ``ms`` (absolute) or ``fraction`` (of FP32) is set."""

    ms: float | None = None
    fraction: float | None = None

    @property
    def relative(self) -> bool:
        return self.fraction is not None

    def resolve(self, reference_ms: float | None = None) -> float:
        """Milliseconds; a relative budget needs the unmodified model's median latency."""
        if self.ms is not None:
            return self.ms
        if reference_ms is None:
            raise ValueError("a relative budget needs the reference latency")
        return float(self.fraction) * reference_ms  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        """``50%`` or ``0.6ms``: what the user asked for (study names use it too)."""
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        return format_ms(self.ms)  # type: ignore[arg-type]

    @property
    def slug(self) -> str:
        """The label as a path-friendly name part: ``50pct`` or ``0.6ms``."""
        return self.label.replace("%", "pct")

    def limit(self, budget_ms: float) -> Limit:
        """Where feasibility is decided, once the budget is resolved to ``budget_ms``."""
        return Limit(budget_ms, self.fraction)


@dataclass(frozen=True)
class Limit:
    """The feasibility decision (docs/measurement.md).

    A relative budget (``fraction`` of the unmodified model) is decided on the candidate's
    latency **ratio** to the reference alone: ``50%`` is met iff ratio <= 0.5, whatever the
    host's speed did to the absolute numbers. An absolute budget is decided on the derived
    latency (reference latency x ratio). A figure without a ratio (unpaired) falls back to its
    latency.
    """

    budget_ms: float
    fraction: float | None = None

    def _value(self, latency_ms: float, ratio: float | None) -> tuple[float, float]:
        if self.fraction is not None and ratio is not None:
            return ratio, self.fraction
        return latency_ms, self.budget_ms

    def excess(self, latency_ms: float, ratio: float | None) -> float:
        """The trial constraint, in milliseconds of the budget: > 0 is over the budget."""
        value, bound = self._value(latency_ms, ratio)
        return (value / bound - 1.0) * self.budget_ms

    def within(self, latency_ms: float, ratio: float | None) -> bool:
        value, bound = self._value(latency_ms, ratio)
        return value <= bound

    def share(self, latency_ms: float, ratio: float | None) -> float:
        """How far from the budget, as a share of it (0.1: 10% over, -0.1: 10% under)."""
        value, bound = self._value(latency_ms, ratio)
        return value / bound - 1.0

    def straddles(self, latency_ms: float, ratio: float | None, low: float, high: float) -> bool:
        """Whether an interval (``low``, ``high``: relative to the figure, e.g. 0.98, 1.02) holds
        the budget: feasible or not is then inside the noise."""
        value, bound = self._value(latency_ms, ratio)
        return value * low <= bound < value * high


def parse_budget_spec(text: str | float) -> Budget:
    """Absolute or relative budget; a bare number is taken as milliseconds."""
    if isinstance(text, str):
        match = _RELATIVE.match(text)
        if match:
            value = float(match.group(1)) / (100.0 if match.group(2) == "%" else 1.0)
            _check_range(text, value, MIN_FRACTION, f"{MIN_FRACTION * 100:g}%", ACCEPTED_ANY)
            return Budget(fraction=value)
    return Budget(ms=parse_budget(text, ACCEPTED_ANY))


def parse_budget(text: str | float, accepted: str = ACCEPTED) -> float:
    """Return the budget in milliseconds; a float is taken as milliseconds already."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _PATTERN.match(str(text))
        if not match:
            raise UserError(f"--budget {text!r}: not a latency; expected {accepted}")
        value = float(match.group(1)) * _UNITS_MS[match.group(2)]
    _check_range(text, value, MIN_MS, "1us", accepted)
    return value


def _check_range(text: str | float, value: float, least: float, least_label: str, accepted: str) -> None:
    if math.isnan(value) or math.isinf(value):
        raise UserError(f"--budget {text!r}: not a finite number; expected {accepted}")
    if value <= 0:
        raise UserError(f"--budget {text!r}: must be greater than zero; expected {accepted}")
    if value < least:
        raise UserError(f"--budget {text!r}: too small to measure, the least is {least_label}")


def format_ms(ms: float) -> str:
    """Compact label used in study names and tables: 0.5ms, 12ms, 250us."""
    if ms < 0.1:
        return f"{ms * 1e3:g}us"
    return f"{ms:g}ms"


#: The default accuracy floor (``--max-drop``): 5% of the unmodified model's score. Relative, so
#: it means the same for any metric's scale; loose enough for what int8 and moderate pruning
#: usually lose, tight enough that no collapsed candidate (chance level on 10 classes is a 90%
#: drop) is ever called the best. A quality target is tighter: MLPerf's 99% of FP32 is ``1%``.
#: docs/accuracy-floor.md
DEFAULT_MAX_DROP = "5%"
#: what turns the floor off: ``--max-drop none``
NO_FLOOR = ("none", "off")


@dataclass(frozen=True)
class MaxDrop:
    """``--max-drop``: the accuracy floor, in points (``1.0``) or relative to FP32 (``1%``)."""

    points: float | None = None
    fraction: float | None = None

    def floor(self, reference: float) -> float:
        """Lowest acceptable score given the unmodified model's ``reference`` score. A relative
        drop is taken from the reference's magnitude, so a negative score (a negated loss) gets
        a floor below it, not above."""
        if self.points is not None:
            return reference - self.points
        return reference - abs(reference) * float(self.fraction)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        if self.points is not None:
            return f"{self.points:g} point{'' if self.points == 1 else 's'}"
        return f"{self.fraction * 100:g}%"  # type: ignore[operator]


def parse_max_drop(text: str | float) -> MaxDrop:
    accepted = "points of the metric (1.0) or a share of the unmodified model's score (1%)"
    s = str(text).strip()
    relative = s.endswith("%")
    try:
        value = float(s[:-1] if relative else s)
    except ValueError:
        raise UserError(f"--max-drop {text!r}: not a number; expected {accepted}, or none") from None
    if not math.isfinite(value) or value < 0 or (relative and value >= 100):
        raise UserError(f"--max-drop {text!r}: out of range; expected {accepted}")
    return MaxDrop(fraction=value / 100) if relative else MaxDrop(points=value)


def parse_floor_option(value: str | float | None) -> MaxDrop | None:
    """``max_drop`` as the search takes it: None or ``"none"`` turns the floor off."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NO_FLOOR):
        return None
    return parse_max_drop(value)


def parse_share(text: str | float, option: str) -> float:
    """A share of something as a fraction: ``20%`` or ``0.2`` -> 0.2; ``0`` turns it off. A bare
    number above 1 is refused (``20`` is ambiguous: write ``20%``)."""
    accepted = "a share such as 20% or 0.2 (0: off)"
    s = str(text).strip()
    relative = s.endswith("%")
    try:
        value = float(s[:-1] if relative else s) / (100.0 if relative else 1.0)
    except ValueError:
        raise UserError(f"{option} {text!r}: not a share; expected {accepted}") from None
    if isinstance(text, bool) or not math.isfinite(value) or value < 0 or (not relative and value > 1):
        raise UserError(f"{option} {text!r}: out of range; expected {accepted}")
    return value


_DURATION = re.compile(r"^\s*(\d*\.?\d+)\s*(s|m|min|h)?\s*$")


def parse_duration(text: str | float) -> float:
    """``--timeout``: ``30m``, ``90s``, ``1.5h`` or seconds as a number -> seconds."""
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"--timeout {text!r}: expected a positive duration: 90s, 30m, 1.5h")
    return float(match.group(1)) * {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[match.group(2)]
