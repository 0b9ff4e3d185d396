"""Study-level knobs: one value for a whole candidate.

Two sections: ``runtime`` (session options, fields of :class:`~autotune.records.RuntimeOptions`,
measured by the device) and ``recipe`` (how int8 layers are quantized, fields of
:class:`~autotune.knobs._recipe.Recipe`). Each knob's first value is its default: what autotune
did before the knob existed. Optuna sees them as parameters ``runtime:NAME`` / ``recipe:NAME``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args, get_type_hints

from autotune.errors import UserError
from autotune.knobs._base import KnobValue
from autotune.records import RuntimeOptions

Section = Literal["runtime", "recipe"]


@dataclass(frozen=True)
class StudyKnob:
    """A study-level knob: its section, name and valid values (default first)."""

    section: Section
    name: str
    values: tuple[KnobValue, ...]
    any_positive_int: bool = False  # threads: any positive integer, not just the listed ones

    @property
    def default(self) -> KnobValue:
        return self.values[0]

    def valid(self, value: Any) -> bool:
        if self.any_positive_int:
            return isinstance(value, int) and not isinstance(value, bool) and value > 0
        return any(value == v and type(value) is type(v) for v in self.values)


def _runtime(name: str) -> StudyKnob:
    """The values of a RuntimeOptions field, from its Literal type: the record is the one list."""
    default: KnobValue = getattr(RuntimeOptions(), name)
    values = get_args(get_type_hints(RuntimeOptions)[name])
    return StudyKnob("runtime", name, (default, *[v for v in values if v != default]))


STUDY_KNOBS: dict[str, StudyKnob] = {
    f"{k.section}:{k.name}": k
    for k in (
        StudyKnob("runtime", "threads", (1,), any_positive_int=True),
        _runtime("execution_mode"),
        _runtime("graph_optimization"),
        _runtime("cudnn_conv_algo_search"),  # CUDA EP
        _runtime("precision"),  # GPU backends' build precision
        StudyKnob("recipe", "calibration", ("minmax", "entropy", "percentile")),
        StudyKnob("recipe", "activation", ("u8", "s8")),
        StudyKnob("recipe", "per_channel", (True, False)),
        StudyKnob("recipe", "reduce_range", (False, True)),
        # ORT quant pre-processing: shape inference only, or full
        StudyKnob("recipe", "preprocess", ("shapes", "optimize")),
        StudyKnob("recipe", "format", ("qdq", "qoperator")),
        # onnxruntime.transformers fusions before quantization
        StudyKnob("recipe", "optimizer", ("none", "transformer")),
    )
}


def section(name: Section) -> dict[str, tuple[KnobValue, ...]]:
    """``{knob: values}`` of one section."""
    return {k.name: k.values for k in STUDY_KNOBS.values() if k.section == name}


#: session options: name -> valid values, default first (threads takes any positive integer)
RUNTIME_KNOBS = section("runtime")
#: quantization recipe: name -> valid values, default first
RECIPE_KNOBS = section("recipe")


def study_section(data: dict[str, Any], name: Section, where: str) -> dict[str, list[KnobValue]]:
    """The ``runtime:`` or ``recipe:`` mapping of a profile or preset, checked."""
    from autotune._yaml import check_keys

    mapping = data.get(name) or {}
    check_keys(mapping, section(name), f"{where}: {name}")
    return {k: study_values(name, k, v, where) for k, v in mapping.items()}


def study_values(name: Section, knob: str, values: Any, where: str) -> list[KnobValue]:
    """Check a YAML list of values of a study-level knob."""
    spec = STUDY_KNOBS[f"{name}:{knob}"]
    if not isinstance(values, list) or not values:
        raise UserError(f"{where}: {name}.{knob} must be a non-empty list, got {values!r}")
    for v in values:
        if not spec.valid(v):
            valid = "positive integers" if spec.any_positive_int else ", ".join(map(str, spec.values))
            raise UserError(f"{where}: invalid {name}.{knob} value {v!r}; valid: {valid}")
    return list(values)
