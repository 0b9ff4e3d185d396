"""Knobs: what a candidate can change, and how each change is applied.

Per-layer knobs implement :class:`LayerKnob` (one module each: ``_width``, ``_heads``,
``_sparsity``, ``_bits``, ``_depth``) and are listed once, in :data:`LAYER_KNOBS`, by
:func:`register`. The space, the builder, the baselines, the report, the sensitivity table,
device profiles and ``autotune devices`` read that registry, so a new knob is one module plus one
:func:`register` line. Order matters: torch-side knobs are applied by :attr:`TorchKnob.stage`,
then in registry order (width and heads before sparsity masks; depth, stage 1, last, so the
others still find their layers).

Study-level knobs (:data:`STUDY_KNOBS`) take one value per candidate: the runtime (session)
options and the quantization :class:`Recipe`.

Example, a knob of your own::

    from autotune.knobs import TorchKnob, register

    class Dropout(TorchKnob): ...   # name, default, help, parse, discover, apply

    register(Dropout())
"""

from autotune.knobs._base import (
    BuildContext,
    Discovery,
    KnobValue,
    LayerKnob,
    OnnxKnob,
    TorchKnob,
    name_layers,
)
from autotune.knobs._bits import Bits
from autotune.knobs._depth import Depth
from autotune.knobs._heads import Heads
from autotune.knobs._quantize import quantize_model
from autotune.knobs._recipe import (
    Recipe,
    deployment,
    describe_study,
    export_fields,
    from_params,
    has_transformer,
    host_has_vnni,
    study_choices,
)
from autotune.knobs._sparsity import Sparsity
from autotune.knobs._study import (
    RECIPE_KNOBS,
    RUNTIME_KNOBS,
    STUDY_KNOBS,
    StudyKnob,
    study_section,
    study_values,
)
from autotune.knobs._width import Width

#: every per-layer knob, by name, in the order they are applied
LAYER_KNOBS: dict[str, LayerKnob] = {}


def register(knob: LayerKnob) -> LayerKnob:
    """Make ``knob`` a per-layer knob of every search from now on; returns it."""
    LAYER_KNOBS[knob.name] = knob
    return knob


def unregister(name: str) -> None:
    LAYER_KNOBS.pop(name, None)


register(Width())
register(Heads())
register(Sparsity())
register(Bits())
register(Depth())


def value_label(knob: str, value: KnobValue) -> str:
    """``bits 8`` -> ``int8``, ``width 0.5`` -> ``w0.5``; a knob no longer registered (an old
    study) reads ``knob value``."""
    k = LAYER_KNOBS.get(knob)
    return k.label(value) if k is not None else f"{knob} {value}"


def default_of(knob: str) -> KnobValue | None:
    k = LAYER_KNOBS.get(knob)
    return k.default if k is not None else None


def torch_knobs() -> list[TorchKnob]:
    """The torch-side knobs in the order they are applied."""
    knobs = [k for k in LAYER_KNOBS.values() if isinstance(k, TorchKnob)]
    return sorted(knobs, key=lambda k: k.stage)  # stable: registry order within a stage


def changes_weights(layers: dict[str, dict[str, KnobValue]]) -> bool:
    """Whether a candidate's per-layer choices change the torch model (so recovery applies)."""
    return any(isinstance(LAYER_KNOBS.get(k), TorchKnob) for cfg in layers.values() for k in cfg)


__all__ = [
    "LAYER_KNOBS",
    "RECIPE_KNOBS",
    "RUNTIME_KNOBS",
    "STUDY_KNOBS",
    "Bits",
    "BuildContext",
    "Depth",
    "Discovery",
    "Heads",
    "KnobValue",
    "LayerKnob",
    "OnnxKnob",
    "Recipe",
    "Sparsity",
    "StudyKnob",
    "TorchKnob",
    "Width",
    "changes_weights",
    "default_of",
    "deployment",
    "describe_study",
    "export_fields",
    "from_params",
    "has_transformer",
    "host_has_vnni",
    "name_layers",
    "quantize_model",
    "register",
    "study_choices",
    "study_section",
    "study_values",
    "torch_knobs",
    "unregister",
    "value_label",
]
