"""Depth: drop whole residual blocks.

At batch 1 and small inputs many models are bound by the number of operators, not by their
multiply-adds: narrower layers and int8 barely help there, fewer blocks do. A residual block is a
module whose output is ``x + f(x)`` for its own input ``x``, at the same shape, so replacing it
with a module that returns ``x`` keeps the graph valid (LayerDrop, stochastic depth at
inference). Its units are blocks, not Conv/Linear layers: :meth:`Depth.discover` returns block
names, and the search space carries them as units without an ONNX node of their own.

Blocks are found generically, by one forward pass with hooks on every module, reading autograd's
graph: a module is residual when a path from its output back to its input runs through adds
whose other operand is computed (the residual adds) and through ops with one computed input and
at most per-channel parameters (activations, LayerNorm / BatchNorm after the add, as in ResNet's
``relu(x + f(x))`` and BERT's post-norm ``LayerNorm(x + f(x))``). A container of blocks (a
stage, ``blocks``) is residual too, but every add on its path belongs to a child: the blocks are
the residual modules with an add of their own, outermost first (a transformer block, not its
attention sub-layer when that is residual as well).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autotune._util import error_line
from autotune.inputs import call_model, first_output
from autotune.knobs._base import BuildContext, Discovery, KnobValue, TorchKnob, name_layers

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

#: autograd nodes of a residual add; an in-place add into a view (GhostNet's ``x += shortcut`` on
#: a slice) is recorded as CopySlices over the view's base and the other operand
ADDS = ("AddBackward", "CopySlices")
MAX_WALK = 400  # autograd nodes visited per module: a block's skip path is a handful of them


@dataclass(frozen=True)
class Block:
    """A droppable residual block and how its caller passes and takes the hidden state."""

    name: str
    arg: int | str  # where the block reads ``x``: a positional index or a keyword
    tuple_len: int  # 0: it returns a tensor; n: an n-tuple whose first item is the hidden state


class Skip(nn.Module):
    """Stands in for a dropped block: returns the block's input as the block returned its output."""

    def __init__(self, arg: int | str = 0, tuple_len: int = 0) -> None:
        super().__init__()
        self.arg, self.tuple_len = arg, tuple_len

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = args[self.arg] if isinstance(self.arg, int) else kwargs[self.arg]
        # extra outputs (attention maps) are not computed by a dropped block
        return x if not self.tuple_len else (x, *([None] * (self.tuple_len - 1)))

    def extra_repr(self) -> str:
        return "dropped residual block"


class Depth(TorchKnob):
    name = "depth"
    default = "keep"
    help = "keep or drop (a residual block)"
    values = ("keep", "drop")  # fewer operators pay on every device
    stage = 1  # after the knobs that narrow layers: their layer names must still resolve

    def parse(self, value: Any) -> KnobValue | None:
        return value if value in ("keep", "drop") else None

    def label(self, value: KnobValue) -> str:
        return "drop" if value == "drop" else "keep"

    def heat(self, value: KnobValue) -> float:
        return 1.0 if value == "drop" else 0.0

    def most_aggressive(self, values: list[KnobValue]) -> KnobValue:
        return "drop" if "drop" in values else values[0]

    def discover(
        self, found: Discovery, allowed: list[KnobValue]
    ) -> tuple[dict[str, list[KnobValue]], list[str]]:
        if found.model is None or "drop" not in allowed:
            return {}, []
        try:
            blocks, left_out = residual_blocks(found.model, found.example_inputs)
        except Exception as exc:  # noqa: BLE001 - a failed analysis leaves depth out, nothing more
            return {}, [
                f"depth not searched: the model's blocks could not be analysed ({error_line(exc, 160)})"
            ]
        blocks, broken = droppable(found.model, found.example_inputs, blocks, found.ignored)
        left_out.update(broken)
        notes = _notes(left_out)
        if not blocks:
            if not left_out:
                notes.append(
                    "depth not searched: no residual block (a module whose output is its input plus a "
                    "branch, at the same shape) in this model"
                )
            return {}, notes
        return {b.name: list(allowed) for b in blocks}, notes

    def apply(self, model: nn.Module, choices: dict[str, KnobValue], ctx: BuildContext) -> None:
        dropped = [name for name, value in choices.items() if value == "drop"]
        if dropped:
            drop_blocks(model, block_specs(model, ctx.example_inputs, dropped))


def drop_blocks(model: nn.Module, blocks: Iterable[Block]) -> None:
    """Replace each block by a :class:`Skip` (in place)."""
    for block in blocks:
        parent_name, _, attr = block.name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, Skip(block.arg, block.tuple_len))  # Sequential/ModuleList too


@dataclass
class _Call:
    """What one module saw on its first call."""

    arg: int | str | None = None
    x: torch.Tensor | None = None
    x_fn: Any = None
    out_fn: Any = None
    out_shape: tuple[int, ...] | None = None
    out_dtype: torch.dtype | None = None
    tuple_len: int = -1  # -1: output neither a tensor nor a tuple led by one
    calls: int = 0


def _block(name: str, call: _Call) -> Block:
    return Block(name, 0 if call.arg is None else call.arg, call.tuple_len)


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int | str | None, Any]:
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            return i, a
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            return k, v
    return None, None


def _trace(
    model: nn.Module,
    example_inputs: ModelInputs,
    only: set[str] | None = None,
    grad: bool = True,
) -> dict[str, _Call]:
    """One forward pass recording each module's (or ``only`` those modules') first input and
    output; with ``grad``, autograd on, so their nodes can be walked."""
    calls: dict[str, _Call] = {}
    handles = []

    def pre(name: str) -> Any:
        def hook(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            call = calls.setdefault(name, _Call())
            call.calls += 1
            if call.calls == 1:
                call.arg, call.x = _first_tensor(args, kwargs)
                call.x_fn = call.x.grad_fn if call.x is not None else None

        return hook

    def post(name: str) -> Any:
        def hook(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            call = calls[name]
            if call.calls != 1:
                return
            first, n = (out, 0) if isinstance(out, torch.Tensor) else (None, -1)
            if type(out) is tuple and out and isinstance(out[0], torch.Tensor):
                first, n = out[0], len(out)
            if first is not None:
                # read now: a later in-place op (an inplace ReLU) would move the tensor's grad_fn
                call.out_fn, call.out_shape, call.tuple_len = first.grad_fn, tuple(first.shape), n
                call.out_dtype = first.dtype

        return hook

    for name, module in model.named_modules():
        if name and (only is None or name in only):
            handles.append(module.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(module.register_forward_hook(post(name), with_kwargs=True))
    # every activation needs a grad_fn, also with frozen parameters: require grad for the pass
    frozen = [p for p in model.parameters() if not p.requires_grad] if grad else []
    was_training = model.training
    try:
        for p in frozen:
            p.requires_grad_(True)
        model.eval()

        def leaf(x: torch.Tensor) -> torch.Tensor:
            return x.detach().clone().requires_grad_(grad) if x.is_floating_point() else x

        inputs: ModelInputs = (
            {k: leaf(v) for k, v in example_inputs.items()}
            if isinstance(example_inputs, dict)
            else tuple(leaf(x) for x in example_inputs)
        )
        with torch.set_grad_enabled(grad):
            call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)
    return calls


def _residual_adds(out_fn: Any, in_fn: Any) -> frozenset[Any]:
    """The residual adds on paths from ``out_fn`` back to ``in_fn`` (empty: not residual)."""
    memo: dict[Any, bool] = {}
    adds: set[Any] = set()

    def computed(fn: Any) -> bool:
        return type(fn).__name__ != "AccumulateGrad"

    def small_parameter(fn: Any) -> bool:
        return not computed(fn) and getattr(fn, "variable", None) is not None and fn.variable.dim() <= 1

    def reaches(fn: Any) -> bool:
        if fn is in_fn:
            return True
        if fn in memo:
            return memo[fn]
        memo[fn] = False
        if len(memo) > MAX_WALK:
            return False
        inputs = [f for f, _ in fn.next_functions if f is not None]
        acts = [f for f in inputs if computed(f)]
        ok = False
        if type(fn).__name__.startswith(ADDS) and len(acts) == 2:
            for f in acts:
                if reaches(f):
                    ok = True
                    adds.add(fn)  # the other operand is computed: a residual add
        elif len(acts) == 1 and all(small_parameter(f) for f in inputs if f is not acts[0]):
            ok = reaches(acts[0])
        memo[fn] = ok
        return ok

    return frozenset(adds) if reaches(out_fn) else frozenset()


def block_specs(model: nn.Module, example_inputs: ModelInputs, names: list[str]) -> list[Block]:
    """How each named block is called (where its input is, what it returns), from one pass."""
    calls = _trace(model, example_inputs, set(names), grad=False)
    missing = [n for n in names if n not in calls or calls[n].x is None or calls[n].tuple_len < 0]
    if missing:
        raise ValueError(f"depth: block {missing[0]} is not called with a tensor or returns no tensor")
    return [_block(n, calls[n]) for n in names]


def residual_blocks(model: nn.Module, example_inputs: ModelInputs) -> tuple[list[Block], dict[str, str]]:
    """The outermost residual blocks, in call order, and blocks left out -> why."""
    calls = _trace(model, example_inputs)
    residual: dict[str, frozenset[Any]] = {}
    for name, call in calls.items():
        x = call.x
        if x is None or call.x_fn is None or call.out_fn is None:
            continue
        if call.out_shape != tuple(x.shape) or call.out_dtype != x.dtype:
            continue
        adds = _residual_adds(call.out_fn, call.x_fn)
        if adds:
            residual[name] = adds
    own = []
    for name, adds in residual.items():
        inner = set().union(*(a for n, a in residual.items() if n.startswith(name + ".")))
        if adds - inner:  # a container of blocks (a stage) has no residual add of its own
            own.append(name)
    why: dict[str, str] = {}
    for name in own:
        if calls[name].calls > 1:
            why[name] = "called more than once"
        elif calls[name].tuple_len < 0:
            why[name] = "returns neither a tensor nor a tuple"
    eligible = [n for n in own if n not in why]
    chosen = [n for n in eligible if not any(n.startswith(o + ".") for o in eligible)]

    def related(name: str) -> bool:
        return any(name.startswith(c + ".") or c.startswith(name + ".") for c in chosen)

    blocks = [_block(n, calls[n]) for n in chosen]
    return blocks, {n: w for n, w in why.items() if not related(n)}


def droppable(
    model: nn.Module, example_inputs: ModelInputs, blocks: list[Block], ignored: list[str]
) -> tuple[list[Block], dict[str, str]]:
    """Blocks whose dropping still runs, exports and keeps the output shape (all of them at once:
    the floor drops every one); blocks holding a layer that must stay are left out too."""
    bad: dict[str, str] = {}
    for b in blocks:
        kept = [n for n in ignored if n.startswith(b.name + ".")]
        if kept:
            bad[b.name] = f"holds {kept[0]}, which must stay"
    good = [b for b in blocks if b.name not in bad]
    reference = _output_shape(model, example_inputs)

    def works(subset: list[Block], export: bool) -> str | None:
        trial = copy.deepcopy(model)
        try:
            drop_blocks(trial, subset)
            shape = _output_shape(trial, example_inputs)
            if shape != reference:
                return f"output shape changes to {shape}"
            if export:
                from autotune.task import export_onnx

                with tempfile.TemporaryDirectory() as tmp:
                    export_onnx(trial.eval(), example_inputs, Path(tmp) / "dropped.onnx")
        except Exception as exc:  # noqa: BLE001 - any failure rules the block out
            return error_line(exc, 160)
        return None

    if not good or works(good, export=True) is None:
        return good, bad
    kept_blocks = []
    for b in good:
        problem = works([b], export=False)
        if problem is None:
            kept_blocks.append(b)
        else:
            bad[b.name] = f"dropping it breaks the model ({problem})"
    if kept_blocks and (problem := works(kept_blocks, export=True)) is not None:
        bad.update({b.name: f"dropping them together breaks the model ({problem})" for b in kept_blocks})
        kept_blocks = []
    return kept_blocks, bad


def _notes(left_out: dict[str, str]) -> list[str]:
    by_reason: dict[str, list[str]] = {}
    for name, why in left_out.items():
        by_reason.setdefault(why, []).append(name)
    return [
        f"depth not searched in {name_layers(names)}: {'it' if len(names) == 1 else 'each'} {why}"
        if why.startswith(("called", "returns", "holds"))
        else f"depth not searched in {name_layers(names)}: {why}"
        for why, names in by_reason.items()
    ]


def _output_shape(model: nn.Module, example_inputs: ModelInputs) -> tuple[int, ...]:
    with torch.no_grad():
        out = first_output(call_model(model.eval(), example_inputs))  # a Hugging Face ModelOutput too
    return tuple(out.shape)
