"""Heads: how many attention heads each attention layer keeps, pruned whole with torch-pruning.

The value is the fraction of heads kept (1.0, 0.75, 0.5, 0.25), rounded to a whole number of heads,
at least one. torch-pruning removes the heads of lowest weight magnitude from every projection of
the unit at once (``num_heads``, ``prune_num_heads``) and narrows the output projection's inputs
to match; the module's head count attributes are then updated (timm's ``num_heads`` and
``attn_dim``, Hugging Face's ``num_attention_heads`` and ``all_head_size``). The knob is searched
on the unit's first projection layer (``attn.qkv``, ``attention.q_proj``, ``attention.self.query``).
Discovery prunes a copy and runs it: a unit whose forward cannot take fewer heads (a head count
baked into a reshape, say) loses the knob, with a note.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch_pruning as tp
from torch import nn

from autotune._util import error_line
from autotune.knobs._attention import (
    AttentionUnit,
    attention_units,
    head_counts,
    output_shape,
    output_sum,
    set_head_count,
    token_parameters_guessed,
)
from autotune.knobs._base import BuildContext, Discovery, KnobValue, TorchKnob, name_layers

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs


class Heads(TorchKnob):
    name = "heads"
    default = 1.0
    help = "the fraction of attention heads kept, in (0, 1], e.g. 0.5"
    values = (1.0, 0.75, 0.5, 0.25)

    def parse(self, value: Any) -> KnobValue | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < float(value) <= 1
        return float(value) if ok else None

    def label(self, value: KnobValue) -> str:
        return f"h{float(value):g}"

    def heat(self, value: KnobValue) -> float:
        return min(1.0, max(0.0, (1.0 - float(value)) / 0.75))

    def discover(
        self, found: Discovery, allowed: list[KnobValue]
    ) -> tuple[dict[str, list[KnobValue]], list[str]]:
        if found.model is None or all(v == self.default for v in allowed):
            return {}, []
        units = [u for u in attention_units(found.model) if u.layer in found.nodes]
        # per unit, the fractions that keep a distinct number of heads (3 heads: 0.75 and 0.5 both keep 2)
        values: dict[str, list[KnobValue]] = {}
        for unit in units:
            counts: dict[int, KnobValue] = {}
            for v in [self.default, *allowed]:
                counts.setdefault(kept_heads(unit.heads, float(v)), v)
            if len(counts) > 1:
                values[unit.layer] = list(counts.values())
        narrowest = min(float(v) for v in allowed)
        searched = [u for u in units if u.layer in values]
        good, bad = check_heads(found.model, found.example_inputs, searched, narrowest)
        by_reason: dict[str, list[str]] = {}
        for unit, why in bad.items():
            by_reason.setdefault(why, []).append(unit.module)
        notes = [
            f"heads not searched in {name_layers(sorted(names))}: torch-pruning cannot prune "
            f"{'its' if len(names) == 1 else 'their'} heads ({why})"
            for why, names in by_reason.items()
        ]
        return {u.layer: values[u.layer] for u in good}, notes

    def apply(self, model: nn.Module, choices: dict[str, KnobValue], ctx: BuildContext) -> None:
        units = {u.layer: u for u in attention_units(model)}
        keep = {units[layer].module: kept_heads(units[layer].heads, float(v)) for layer, v in choices.items()}
        prune_heads(model, ctx.example_inputs, keep)


def kept_heads(heads: int, fraction: float) -> int:
    """Heads left when keeping ``fraction`` of ``heads``: rounded half up, at least one."""
    return max(1, min(heads, int(heads * fraction + 0.5)))


def prune_heads(model: nn.Module, example_inputs: ModelInputs, keep: dict[str, int]) -> None:
    """Leave ``keep[unit module]`` heads in each named attention unit (in place)."""
    units = {u.module: u for u in attention_units(model)}
    pruned = {name: n for name, n in keep.items() if n < units[name].heads}
    if not pruned:
        return
    ratios: dict[nn.Module, float] = {}
    for name, n in pruned.items():
        unit = units[name]
        # torch-pruning removes ceil(ratio x heads) heads: half a head less cannot round to one more
        ratio = (unit.heads - n - 0.5) / unit.heads
        ratios.update({model.get_submodule(p): ratio for p in unit.projections})
    num_heads = head_counts(model, list(units.values()))
    with token_parameters_guessed():
        pruner = tp.pruner.BasePruner(
            model,
            example_inputs,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=0.0,
            # a group is only visited with a channel ratio above 0; prune_head_dims=False keeps every
            # head's size, so the heads ratio alone decides what goes
            pruning_ratio_dict=ratios,
            head_pruning_ratio_dict=ratios,
            num_heads=num_heads,
            prune_num_heads=True,
            prune_head_dims=False,
            output_transform=output_sum,
        )
        pruner.step()
    for name, n in pruned.items():
        unit = units[name]
        left = pruner.num_heads[model.get_submodule(unit.layer)]
        if left != n:
            raise RuntimeError(f"torch-pruning left {left} heads in {name}, not {n}")
        set_head_count(model, unit, left)


def check_heads(
    model: nn.Module,
    example_inputs: ModelInputs,
    units: Sequence[AttentionUnit],
    fraction: float = 0.5,
) -> tuple[list[AttentionUnit], dict[AttentionUnit, str]]:
    """The units whose head pruning yields a model that runs with the same output shape.

    All units at once first (one forward pass when everything works), then one by one.
    """
    reference = output_shape(model, example_inputs)

    def works(subset: Sequence[AttentionUnit]) -> str | None:
        trial = copy.deepcopy(model)
        try:
            prune_heads(trial, example_inputs, {u.module: kept_heads(u.heads, fraction) for u in subset})
            shape = output_shape(trial, example_inputs)
        except Exception as exc:  # noqa: BLE001 - any failure rules the knob out
            return error_line(exc, 200)
        return None if shape == reference else f"output shape changes to {shape}"

    if not units or works(units) is None:
        return list(units), {}
    good, bad = [], {}
    for unit in units:
        problem = works([unit])
        if problem is None:
            good.append(unit)
        else:
            bad[unit] = problem
    if good and works(good) is not None:  # individually fine, jointly broken: be conservative
        bad.update(dict.fromkeys(good, "fails when combined with other attention layers"))
        good = []
    return good, bad
