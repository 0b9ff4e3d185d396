"""Sparsity: unstructured magnitude masks or 2:4, with torch.nn.utils.prune.

Masks stay on during recovery (so fine-tuning keeps the zeros) and are folded into the weights
after it. Unstructured sparsity makes nothing faster on dense kernels; 2:4 pays on TensorRT with
sparse tensor cores (Ampere and later): a backend says which in its capabilities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.nn.utils import prune

from autotune.knobs._base import BuildContext, Discovery, KnobValue, TorchKnob

if TYPE_CHECKING:
    from autotune.devices import Capabilities


class Sparsity(TorchKnob):
    name = "sparsity"
    default = 0.0
    help = "an unstructured fraction in [0, 1) or '2:4'"

    def parse(self, value: Any) -> KnobValue | None:
        if value == "2:4":
            return "2:4"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= float(value) < 1
        return float(value) if ok else None

    def label(self, value: KnobValue) -> str:
        return str(value) if isinstance(value, str) else f"s{float(value):g}"

    def heat(self, value: KnobValue) -> float:
        return 0.5 if isinstance(value, str) else min(1.0, float(value) / 0.75)

    def real_on(self, capabilities: Capabilities) -> tuple[KnobValue, ...] | None:
        return capabilities.sparsity

    def discover(
        self, found: Discovery, allowed: list[KnobValue]
    ) -> tuple[dict[str, list[KnobValue]], list[str]]:
        if found.model is None:
            return {}, []
        out: dict[str, list[KnobValue]] = {}
        for layer in found.layers:
            module = found.module(layer)
            out[layer] = [s for s in allowed if s != "2:4" or supports_two_four(module)] or [self.default]
        return out, []

    def apply(self, model: nn.Module, choices: dict[str, KnobValue], ctx: BuildContext) -> None:
        apply_sparsity(model, choices)

    def finish(self, model: nn.Module) -> None:
        make_permanent([m for m in model.modules() if hasattr(m, "weight_orig")])


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


def apply_sparsity(model: nn.Module, sparsity: dict[str, KnobValue]) -> list[nn.Module]:
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
