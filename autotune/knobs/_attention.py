"""Attention layers as units: where they are in a model, and how their head count is kept in sync.

A multi-head attention module computes its queries, keys and values with one fused Linear
(``qkv``, timm) or three (``q_proj``/``k_proj``/``v_proj`` in Hugging Face ViT-style models,
``query``/``key``/``value`` in BERT-style ones), each output laid out as heads x head size. Those
outputs may only shrink by whole heads, in every projection at once: the ``heads`` knob does that,
and the ``width`` knob leaves them alone. Units are found by structure (an integer head count
attribute plus projections whose widths divide by it), not by class name, so any model written
in these conventions is covered.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autotune.inputs import call_model, first_output

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

#: where the head count is kept: timm's ``num_heads``, Hugging Face's ``num_attention_heads``
HEAD_COUNT_ATTRS = ("num_heads", "num_attention_heads")
FUSED = "qkv"
SEPARATE = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))
#: attributes holding heads x head size, used by forward to reshape (timm's ``attn_dim``,
#: BERT's ``all_head_size``): they follow the head count
INNER_SIZE_ATTRS = ("attn_dim", "all_head_size")


@dataclass(frozen=True)
class AttentionUnit:
    """One multi-head attention module."""

    module: str  # qualified name of the module holding the head count
    count_attr: str  # the attribute holding it
    heads: int
    projections: tuple[str, ...]  # qualified names of the Linear layers whose outputs are heads

    @property
    def layer(self) -> str:
        """The layer the ``heads`` knob of this unit is searched on: its first projection."""
        return self.projections[0]


def attention_units(model: nn.Module) -> list[AttentionUnit]:
    """Every multi-head attention module of ``model`` with at least two heads."""
    units = []
    for name, module in model.named_modules():
        attr = next((a for a in HEAD_COUNT_ATTRS if _is_count(getattr(module, a, None))), None)
        if attr is None:
            continue
        heads = int(getattr(module, attr))
        projections = _projections(dict(module.named_children()), heads)
        if projections is None or heads < 2:
            continue
        qualified = tuple(f"{name}.{p}" if name else p for p in projections)
        units.append(AttentionUnit(name, attr, heads, qualified))
    return units


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _projections(children: Mapping[str, nn.Module], heads: int) -> tuple[str, ...] | None:
    fused = children.get(FUSED)
    if isinstance(fused, nn.Linear) and fused.out_features % (3 * heads) == 0:
        return (FUSED,)
    for names in SEPARATE:
        layers = [children.get(n) for n in names]
        widths = {m.out_features for m in layers if isinstance(m, nn.Linear)}
        # grouped-query attention (fewer key/value heads) has unequal widths: not a unit here
        if all(isinstance(m, nn.Linear) for m in layers) and len(widths) == 1 and widths.pop() % heads == 0:
            return names
    return None


def set_head_count(model: nn.Module, unit: AttentionUnit, heads: int) -> None:
    """Record ``heads`` in the unit's module, and the attributes that hold heads x head size."""
    module = model.get_submodule(unit.module)
    old = int(getattr(module, unit.count_attr))
    setattr(module, unit.count_attr, heads)
    for attr in INNER_SIZE_ATTRS:
        size = getattr(module, attr, None)
        if isinstance(size, int) and _is_count(size) and size % old == 0:
            setattr(module, attr, size // old * heads)


def head_counts(model: nn.Module, units: list[AttentionUnit]) -> dict[nn.Module, int]:
    """torch-pruning's ``num_heads``: each projection layer -> its unit's head count."""
    return {model.get_submodule(p): unit.heads for unit in units for p in unit.projections}


def output_sum(out: Any) -> torch.Tensor:
    """What torch-pruning traces back from: one scalar, whatever the model returns (a Hugging
    Face model returns a ModelOutput, a dict of logits and friends)."""
    return first_output(out).sum()  # type: ignore[no-any-return]


def output_shape(model: nn.Module, example_inputs: ModelInputs) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(first_output(call_model(model, example_inputs)).shape)


@contextlib.contextmanager
def token_parameters_guessed() -> Iterator[None]:
    """torch-pruning warns on every graph it builds that it guesses how to prune parameters no
    layer owns (a ViT's class token and position embeddings): along their last dimension, the
    channels, which is right for them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        yield
