"""A candidate as it really runs: its bit-widths replaced by the precision onnxruntime runs each
layer in (read off the optimised graph by the builder, autotune/devices/_ort_graph.py).

onnxruntime fuses a float layer between two int8 neighbours into an int8 kernel, and leaves an
int8 layer whose QDQ pair it does not fuse in float: the configuration a user reads (summary,
report, export JSON) is the one that runs, with the layers whose precision differs from the
candidate's choice named.
"""

from __future__ import annotations

from dataclasses import replace

from autotune.knobs import LAYER_KNOBS, KnobValue, value_label
from autotune.space import Candidate

#: the bit-width knob: its labels (fp32, fp16, int8, int4) are the precisions recorded
KNOB = "bits"
#: changed layers named in one configuration line before "and N more"
MAX_NAMED = 3


def changes(candidate: Candidate, precision: dict[str, str] | None) -> dict[str, tuple[str, str]]:
    """``layer -> (chosen, runs)`` for every layer whose precision differs from the choice."""
    if not precision or KNOB not in LAYER_KNOBS:
        return {}
    out = {}
    for layer, runs in precision.items():
        chosen = value_label(KNOB, candidate.value(layer, KNOB))
        if runs != chosen:
            out[layer] = (chosen, runs)
    return out


def as_run(candidate: Candidate, precision: dict[str, str] | None) -> Candidate:
    """``candidate`` with each layer's bit-width as it runs."""
    diff = changes(candidate, precision)
    if not diff:
        return candidate
    knob = LAYER_KNOBS[KNOB]
    by_label: dict[str, KnobValue] = {value_label(KNOB, v): v for v in (32, 16, 8, 4)}
    layers = {name: dict(cfg) for name, cfg in candidate.layers.items()}
    for layer, (_, runs) in diff.items():
        cfg = layers.setdefault(layer, {})
        value = by_label.get(runs, knob.default)
        if value == knob.default:
            cfg.pop(KNOB, None)
        else:
            cfg[KNOB] = value
        if not cfg:
            del layers[layer]
    return replace(candidate, layers=layers)


def describe(candidate: Candidate, precision: dict[str, str] | None) -> str:
    """The configuration as it runs, e.g. ``int8x5 | u8s8 qdq ... (runs conv1 int8, chosen fp32)``."""
    diff = changes(candidate, precision)
    text = as_run(candidate, precision).describe()
    if not diff:
        return text
    named = [f"{layer} {runs} (chosen {chosen})" for layer, (chosen, runs) in list(diff.items())[:MAX_NAMED]]
    more = f" and {len(diff) - MAX_NAMED} more" if len(diff) > MAX_NAMED else ""
    return f"{text} [onnxruntime runs {', '.join(named)}{more}]"
