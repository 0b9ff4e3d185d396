"""Knobs: what a candidate can change, and how each change is applied.

Per-layer knobs (width, sparsity, bits) and study-level knobs (the quantization recipe, the
runtime options). Each knob owns its parsing, labels, discovery, application and where it pays.
"""

from autotune.knobs._probe import name_layers, quantizable, width_roots
from autotune.knobs._prune import (
    apply_sparsity,
    make_permanent,
    prunable_layers,
    prune_width,
    supports_two_four,
)
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
from autotune.knobs._values import (
    KNOBS,
    RECIPE_KNOBS,
    RUNTIME_KNOBS,
    Knob,
    KnobValue,
    study_section,
    study_values,
    value_label,
)

__all__ = [
    "KNOBS",
    "RECIPE_KNOBS",
    "RUNTIME_KNOBS",
    "Knob",
    "KnobValue",
    "Recipe",
    "apply_sparsity",
    "deployment",
    "describe_study",
    "export_fields",
    "from_params",
    "has_transformer",
    "host_has_vnni",
    "make_permanent",
    "name_layers",
    "prunable_layers",
    "prune_width",
    "quantizable",
    "quantize_model",
    "study_choices",
    "study_section",
    "study_values",
    "supports_two_four",
    "value_label",
    "width_roots",
]
