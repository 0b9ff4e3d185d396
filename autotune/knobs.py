"""Per-layer knobs: what may change in a layer, and which values are valid.

Each knob knows its "unchanged" value and parses YAML values. How a knob is applied lives
with its stage of the data flow: width and sparsity in :mod:`autotune.compress` (torch),
bit-width in :mod:`autotune.quantize` (ONNX).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autotune.errors import UserError

KnobValue = float | int | str


@dataclass(frozen=True)
class Knob:
    name: str
    default: KnobValue
    help: str

    def parse(self, value: Any, where: str) -> KnobValue:
        parsed = _PARSERS[self.name](value)
        if parsed is None:
            raise UserError(f"{where}: invalid {self.name} value {value!r}; {self.help}")
        return parsed


def _width(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and 0 < float(v) <= 1 else None


def _sparsity(v: Any) -> float | str | None:
    if v == "2:4":
        return "2:4"
    return float(v) if isinstance(v, (int, float)) and 0 <= float(v) < 1 else None


def _bits(v: Any) -> int | None:
    return int(v) if v in (32, 16, 8, 4) and not isinstance(v, bool) else None


_PARSERS = {"width": _width, "sparsity": _sparsity, "bits": _bits}

WIDTH = Knob("width", 1.0, "a channel multiplier in (0, 1], e.g. 0.75")
SPARSITY = Knob("sparsity", 0.0, "an unstructured fraction in [0, 1) or '2:4'")
BITS = Knob("bits", 32, "one of 32, 16, 8, 4")

KNOBS: dict[str, Knob] = {k.name: k for k in (WIDTH, SPARSITY, BITS)}
RUNTIME_KNOBS = ("threads",)
