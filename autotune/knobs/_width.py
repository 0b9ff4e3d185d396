"""Width: structured channel pruning with torch-pruning's DepGraph.

Channels coupled by residual adds, concatenations and depthwise convs are pruned together; each
coupled group is one knob, named after its root layer. Channel counts are rounded to multiples
of 8. Discovery keeps the roots whose pruning still runs and keeps the output shape.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch_pruning as tp
from torch import nn

from autotune._util import error_line
from autotune.inputs import call_model, first_output
from autotune.knobs._base import BuildContext, Discovery, KnobValue, TorchKnob, name_layers

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

ROUND_TO = 8  # channel counts stay multiples of 8: vector units and tensor cores want them


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
        narrowest = min(float(w) for w in allowed)
        roots, notes = width_roots(found.model, found.example_inputs, found.ignored, found.layers, narrowest)
        return {r: list(allowed) for r in roots}, notes

    def apply(self, model: nn.Module, choices: dict[str, KnobValue], ctx: BuildContext) -> None:
        prune_width(model, ctx.example_inputs, {n: float(w) for n, w in choices.items()}, ctx.ignored)


def width_groups(model: nn.Module, example_inputs: ModelInputs, ignored: Iterable[str]) -> list[str]:
    """Root layer of each coupled channel group that may be narrowed."""
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    groups = graph.get_all_groups(
        ignored_layers=[modules[n] for n in ignored], root_module_types=[nn.Conv2d, nn.Linear]
    )
    roots = []
    for group in groups:
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
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.0,
        pruning_ratio_dict=ratios,
        ignored_layers=[modules[n] for n in ignored],
        round_to=ROUND_TO,
    )
    pruner.step()


def check_width_roots(
    model: nn.Module,
    example_inputs: ModelInputs,
    roots: list[str],
    ignored: list[str],
    width: float = 0.5,
) -> tuple[list[str], dict[str, str]]:
    """Keep the roots whose pruning yields a model that still runs with the same output shape.

    torch-pruning cannot follow every graph (attention heads reshaped by hand, say); testing
    all roots at once is one forward pass in the common case where everything works.
    """
    reference = _output_shape(model, example_inputs)

    def works(subset: list[str]) -> str | None:
        trial = copy.deepcopy(model)
        try:
            prune_width(trial, example_inputs, dict.fromkeys(subset, width), ignored)
            shape = _output_shape(trial, example_inputs)
        except Exception as exc:  # noqa: BLE001 - any failure rules the knob out
            return error_line(exc, 200)
        return None if shape == reference else f"output shape changes to {shape}"

    if not roots or works(roots) is None:
        return roots, {}
    good, bad = [], {}
    for root in roots:
        problem = works([root])
        if problem is None:
            good.append(root)
        else:
            bad[root] = problem
    if good and works(good) is not None:  # individually fine, jointly broken: be conservative
        bad.update(dict.fromkeys(good, "fails when combined with other groups"))
        good = []
    return good, bad


def width_roots(
    model: nn.Module,
    example_inputs: ModelInputs,
    ignored: list[str],
    candidates: Sequence[str],
    narrowest: float,
) -> tuple[list[str], list[str]]:
    """Group roots whose width can be searched, and one note per reason the others cannot.

    A failure of torch-pruning rules width out with a note; it never reaches the user.
    """
    try:
        roots = [r for r in width_groups(model, example_inputs, ignored) if r in candidates]
    except Exception as exc:  # noqa: BLE001 - a tracing failure rules width out, nothing more
        return [], [f"width not searched: torch-pruning cannot trace the model ({error_line(exc, 160)})"]
    try:
        good, bad = check_width_roots(model, example_inputs, roots, ignored, width=narrowest)
    except Exception as exc:  # noqa: BLE001
        return [], [f"width not searched: torch-pruning fails on this model ({error_line(exc, 160)})"]
    by_reason: dict[str, list[str]] = {}
    for root, why in bad.items():
        by_reason.setdefault(why, []).append(root)
    notes = [
        f"width not searched in {name_layers(sorted(names))}: torch-pruning cannot narrow "
        f"{'it' if len(names) == 1 else 'them'} ({why})"
        for why, names in by_reason.items()
    ]
    return good, notes


def _output_shape(model: nn.Module, example_inputs: ModelInputs) -> tuple[int, ...]:
    with torch.no_grad():
        out = first_output(call_model(model, example_inputs))  # a Hugging Face ModelOutput too
    return tuple(out.shape)
