"""Knobs: what may change in a layer, and which values are valid; and the study-level knobs.

Each per-layer knob knows its "unchanged" value and parses YAML values. How a knob is applied
lives with its stage of the data flow: width and sparsity in :mod:`autotune.knobs._prune` (torch),
bit-width in :mod:`autotune.knobs._quantize` (ONNX). Study-level knobs take one value for the whole
candidate: runtime (session) options, measured by the device, and the quantization recipe
(:mod:`autotune.knobs._recipe`). The first value of each is the default: what autotune did before.
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

#: session options (records.RuntimeOptions fields): name -> valid values, default first;
#: threads takes any positive integer
RUNTIME_KNOBS: dict[str, tuple[KnobValue, ...]] = {
    "threads": (1,),
    "execution_mode": ("sequential", "parallel"),
    "graph_optimization": ("all", "extended", "basic", "disable"),
    "cudnn_conv_algo_search": ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),  # CUDA EP
    "precision": ("fp32", "fp16"),  # TensorRT: fp16 builder flag
}
#: quantization recipe (recipes.Recipe fields): name -> valid values, default first
RECIPE_KNOBS: dict[str, tuple[KnobValue, ...]] = {
    "calibration": ("minmax", "entropy", "percentile"),
    "activation": ("u8", "s8"),
    "per_channel": (True, False),
    "reduce_range": (False, True),
    "preprocess": ("shapes", "optimize"),  # ORT quant pre-processing: shape inference only, or full
    "format": ("qdq", "qoperator"),
    "optimizer": ("none", "transformer"),  # onnxruntime.transformers fusions before quantization
}


def value_label(knob: str, value: KnobValue) -> str:
    """``bits 8`` -> ``int8``, ``width 0.5`` -> ``w0.5``, ``sparsity 0.5`` -> ``s0.5``."""
    if knob == "bits":
        return {32: "fp32", 16: "fp16"}.get(int(value), f"int{int(value)}")
    if knob == "width":
        return f"w{float(value):g}"
    if knob == "sparsity":
        return str(value) if isinstance(value, str) else f"s{float(value):g}"
    return f"{knob} {value}"


def study_section(data: dict[str, Any], section: str, where: str) -> dict[str, list[KnobValue]]:
    """The ``runtime:`` or ``recipe:`` mapping of a profile or preset, checked."""
    from autotune._yaml import check_keys

    mapping = data.get(section) or {}
    check_keys(mapping, RUNTIME_KNOBS if section == "runtime" else RECIPE_KNOBS, f"{where}: {section}")
    return {k: study_values(section, k, v, where) for k, v in mapping.items()}


def study_values(section: str, name: str, values: Any, where: str) -> list[KnobValue]:
    """Check a YAML list of values of a study-level knob (``section``: runtime or recipe)."""
    table = RUNTIME_KNOBS if section == "runtime" else RECIPE_KNOBS
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: {section}.{name} must be a non-empty list, got {values!r}")
    for v in values:
        if name == "threads":
            ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
        else:
            ok = any(v == t and type(v) is type(t) for t in table[name])
        if not ok:
            valid = "positive integers" if name == "threads" else ", ".join(map(str, table[name]))
            raise UserError(f"{where}: invalid {section}.{name} value {v!r}; valid: {valid}")
    return list(values)
