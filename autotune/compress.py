"""Torch-side knobs: width (structured channel pruning) and sparsity (weight masks).

Width uses torch-pruning's DepGraph, so channels coupled by residual adds, concatenations and
depthwise convs are pruned together; each coupled group is one knob, named after its root layer.
Sparsity uses torch.nn.utils.prune masks, kept during fine-tuning and made permanent after.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

from autotune._util import error_line
from autotune.inputs import call_model, first_output

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

ROUND_TO = 8  # channel counts stay multiples of 8: vector units and tensor cores want them


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d and Linear layers by qualified name: the layers that get knobs."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


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


def _output_shape(model: nn.Module, example_inputs: ModelInputs) -> tuple[int, ...]:
    with torch.no_grad():
        out = first_output(call_model(model, example_inputs))  # a Hugging Face ModelOutput too
    return tuple(out.shape)


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """2:4 mask along the input-channel axis: the 2 largest of every 4 weights survive.

    That is the layout TensorRT's sparse tensor cores need (per output channel and kernel tap).
    """
    w = weight.detach()
    if w.dim() == 4:  # (O, I, kh, kw) -> (O, kh, kw, I)
        w = w.permute(0, 2, 3, 1)
    groups = w.abs().reshape(-1, 4)
    keep = groups.topk(2, dim=1).indices
    mask = torch.zeros_like(groups).scatter_(1, keep, 1.0).reshape(w.shape)
    if weight.dim() == 4:
        mask = mask.permute(0, 3, 1, 2)
    return mask.contiguous()


def supports_two_four(module: nn.Module) -> bool:
    in_per_group = int(cast(torch.Tensor, module.weight).shape[1])
    return in_per_group % 4 == 0 and in_per_group >= 4


def apply_sparsity(model: nn.Module, sparsity: dict[str, float | str]) -> list[nn.Module]:
    """Mask weights (magnitude or 2:4); returns the masked modules for :func:`make_permanent`."""
    modules = dict(model.named_modules())
    masked = []
    for name, s in sparsity.items():
        module = modules[name]
        if s == "2:4":
            prune.custom_from_mask(module, "weight", two_four_mask(module.weight))
        elif float(s) > 0:
            prune.l1_unstructured(module, "weight", amount=float(s))
        else:
            continue
        masked.append(module)
    return masked


def make_permanent(modules: list[nn.Module]) -> None:
    """Fold masks into the weights (after fine-tuning, before export)."""
    for module in modules:
        prune.remove(module, "weight")
