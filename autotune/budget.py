"""Latency budgets: ``10ms``, ``10 ms``, ``0.01s``, ``500us`` -> milliseconds."""

from __future__ import annotations

import math
import re

from autotune.errors import UserError

_UNITS_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3}
_PATTERN = re.compile(r"^\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*(s|ms|us|µs)\s*$")
ACCEPTED = "a positive number with a unit: 10ms, 10 ms, 0.01s, 500us"


def parse_budget(text: str | float) -> float:
    """Return the budget in milliseconds; a float is taken as milliseconds already."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _PATTERN.match(str(text))
        if not match:
            raise UserError(f"--budget {text!r}: not a latency; expected {ACCEPTED}")
        value = float(match.group(1)) * _UNITS_MS[match.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"--budget {text!r}: must be greater than zero; expected {ACCEPTED}")
    return value


def format_ms(ms: float) -> str:
    """Compact label used in study names and tables: 0.5ms, 12ms, 250us."""
    if ms < 0.1:
        return f"{ms * 1e3:g}us"
    return f"{ms:g}ms"
