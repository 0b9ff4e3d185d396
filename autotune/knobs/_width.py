"""Width: structured channel pruning with torch-pruning's DepGraph.

Channels coupled by residual adds, concatenations and depthwise convs are pruned together; each
coupled group is one knob, named after its root layer. Channel counts are rounded to multiples
of 8. Discovery keeps the roots whose pruning still runs and keeps the output shape at every
searched width (a group can fail at 0.5 and pass at 0.25, where torch-pruning declines to prune).

In a transformer, width is the MLP's hidden width (``fc1``/``fc2``, ``intermediate``/``output``
dense) and the residual stream; the query/key/value outputs of an attention layer are heads
x head size and are left to the ``heads`` knob (see :mod:`autotune.knobs._attention`): a group
that contains them is never a width root, and torch-pruning is told the head counts so it never
narrows them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch_pruning as tp
from torch import nn

from autotune._util import TimeLimit, error_line, time_limit
from autotune.knobs._attention import (
    attention_units,
    head_counts,
    output_shape,
    output_sum,
    token_parameters_guessed,
)
from autotune.knobs._base import BuildContext, Discovery, KnobValue, TorchKnob, name_layers

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

ROUND_TO = 8  # channel counts stay multiples of 8: vector units and tensor cores want them
#: wall-time bound on torch-pruning's analysis in discovery: past it, width is left out with a note
GROUPING_LIMIT_S = 120.0


class Width(TorchKnob):
    name = "width"
    default = 1.0
    help = "a channel multiplier in (0, 1], e.g. 0.75"

    def parse(self, value: Any) -> KnobValue | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < float(value) <= 1
        return float(value) if ok else None

    def label(self, value: KnobValue) -> str:
        return f"w{float(value):g}"

    def heat(self, value: KnobValue) -> float:
        return min(1.0, max(0.0, (1.0 - float(value)) / 0.75))

    def discover(
        self, found: Discovery, allowed: list[KnobValue]
    ) -> tuple[dict[str, list[KnobValue]], list[str]]:
        if found.model is None or all(w == self.default for w in allowed):
            return {}, []
        widths = sorted({float(w) for w in allowed if w != self.default})
        roots, notes = width_roots(found.model, found.example_inputs, found.ignored, found.layers, widths)
        return {r: list(allowed) for r in roots}, notes

    def apply(self, model: nn.Module, choices: dict[str, KnobValue], ctx: BuildContext) -> None:
        prune_width(model, ctx.example_inputs, {n: float(w) for n, w in choices.items()}, ctx.ignored)


def width_groups(model: nn.Module, example_inputs: ModelInputs, ignored: Iterable[str]) -> list[str]:
    """Root layer of each coupled channel group that may be narrowed (not attention heads)."""
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    with token_parameters_guessed():
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=example_inputs, output_transform=output_sum
        )
    groups = graph.get_all_groups(
        ignored_layers=[modules[n] for n in ignored], root_module_types=[nn.Conv2d, nn.Linear]
    )
    heads = set(head_counts(model, attention_units(model)))
    roots = []
    for group in groups:
        if any(d.target.module in heads and graph.is_out_channel_pruning_fn(d.handler) for d, _ in group):
            continue  # queries, keys, values: whole heads or nothing (the heads knob)
        root = names.get(group[0].dep.target.module)
        if root is not None and root not in roots:
            roots.append(root)
    return roots


def prune_width(
    model: nn.Module,
    example_inputs: ModelInputs,
    widths: dict[str, float],
    ignored: Iterable[str],
) -> None:
    """Narrow each group root to ``width`` of its channels (in place, rounded to 8)."""
    modules = dict(model.named_modules())
    ratios = {modules[n]: 1.0 - w for n, w in widths.items() if w < 1.0}
    if not ratios:
        return
    with token_parameters_guessed():
        pruner = tp.pruner.MetaPruner(
            model,
            example_inputs,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=0.0,
            pruning_ratio_dict=ratios,
            ignored_layers=[modules[n] for n in ignored],
            round_to=ROUND_TO,
            # attention heads are known to torch-pruning but neither removed nor narrowed here
            num_heads=head_counts(model, attention_units(model)),
            prune_num_heads=False,
            prune_head_dims=False,
            output_transform=output_sum,
        )
        pruner.step()


def check_width_roots(
    model: nn.Module,
    example_inputs: ModelInputs,
    roots: list[str],
    ignored: list[str],
    widths: Sequence[float] = (0.5,),
) -> tuple[list[str], dict[str, str]]:
    """Keep the roots whose pruning yields a model that still runs with the same output shape,
    at each of ``widths``.

    torch-pruning cannot follow every graph (a channel split by hand, say), and whether it breaks
    one depends on the channel count; testing all roots at once is one forward pass per width in
    the common case where everything works.
    """
    reference = output_shape(model, example_inputs)

    def works(subset: list[str], at: Sequence[float]) -> str | None:
        for width in at:
            trial = copy.deepcopy(model)
            try:
                prune_width(trial, example_inputs, dict.fromkeys(subset, width), ignored)
                shape = output_shape(trial, example_inputs)
            except Exception as exc:  # noqa: BLE001 - any failure rules the knob out
                return error_line(exc, 200)
            if shape != reference:
                return f"output shape changes to {shape}"
        return None

    failing = [w for w in widths if works(roots, [w]) is not None] if roots else []
    if not failing:
        return roots, {}
    good, bad = [], {}
    for root in roots:  # one by one, only at the widths where all together failed
        problem = works([root], failing)
        if problem is None:
            good.append(root)
        else:
            bad[root] = problem
    if good and works(good, widths) is not None:  # individually fine, jointly broken: be conservative
        bad.update(dict.fromkeys(good, "fails when combined with other groups"))
        good = []
    return good, bad


def width_roots(
    model: nn.Module,
    example_inputs: ModelInputs,
    ignored: list[str],
    candidates: Sequence[str],
    widths: Sequence[float],
) -> tuple[list[str], list[str]]:
    """Group roots whose width can be searched, and one note per reason the others cannot.

    A failure of torch-pruning rules width out with a note; it never reaches the user.
    """
    try:
        # one bound on the whole analysis: past it, every build that narrows would pay it again
        with time_limit(GROUPING_LIMIT_S):
            try:
                roots = [r for r in width_groups(model, example_inputs, ignored) if r in candidates]
            except Exception as exc:  # noqa: BLE001 - a tracing failure rules width out, nothing more
                return [], [
                    f"width not searched: torch-pruning cannot trace the model ({error_line(exc, 160)})"
                ]
            try:
                good, bad = check_width_roots(model, example_inputs, roots, ignored, widths)
            except Exception as exc:  # noqa: BLE001
                return [], [f"width not searched: torch-pruning fails on this model ({error_line(exc, 160)})"]
    except TimeLimit:  # a BaseException: the handlers above let it through
        return [], [
            f"width not searched: torch-pruning's channel analysis took over {GROUPING_LIMIT_S:g} s "
            "(its grouping grows with the cube of a coupled group's size; every build would pay it)"
        ]
    by_reason: dict[str, list[str]] = {}
    for root, why in bad.items():
        by_reason.setdefault(why, []).append(root)
    notes = [
        f"width not searched in {name_layers(sorted(names))}: torch-pruning cannot narrow "
        f"{'it' if len(names) == 1 else 'them'} ({why})"
        for why, names in by_reason.items()
    ]
    return good, notes
