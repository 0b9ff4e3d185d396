"""Model inputs of any kind: names, dtypes and shapes, matched between a task and an ONNX graph.

A task's example inputs are a tuple of tensors (positional arguments of ``forward``) or a dict
(keyword arguments, as Hugging Face models take: ``input_ids``, ``attention_mask``, ...). Every
stage that feeds a model (measurement, calibration, sensitivity, the predictor, the agent, the
runner given to ``evaluate``) feeds it *by name* with the task's own arrays, in the dtype the
ONNX graph declares: float32 images and int64 token ids alike.

Synthetic inputs (an ONNX model with no data, ``autotune measure``) follow the graph too: floats
are standard normal; integer ids stay below the size of the embedding table they index; masks
are ones. (A torch task always has real inputs: its example inputs and calibration data.)

numpy and onnx only at import: ``autotune measure`` and the agent side use this without torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx
    import torch

    #: what ``example_inputs`` may be: positional tensors, or tensors by keyword
    ModelInputs = tuple[torch.Tensor, ...] | dict[str, torch.Tensor]

#: the dtypes numpy reads an ONNX input type as (onnxruntime's ``tensor(...)`` strings)
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}
#: an integer input whose name says it is a mask gets ones (attend to every position)
_MASK_WORDS = ("mask",)


class InputError(ValueError):
    """An input that does not fit the model: one line naming the array, its shape and the model's."""


def default_names(n: int) -> list[str]:
    """ONNX input names of a model exported from positional inputs."""
    return ["input"] if n == 1 else [f"input{i}" for i in range(n)]


@dataclass(frozen=True)
class InputSpec:
    """One graph input: name, numpy dtype, dims (None where dynamic)."""

    name: str
    dtype: np.dtype[Any]
    dims: tuple[int | None, ...]

    def __str__(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.dtype}[{dims}]"

    @property
    def batch_dynamic(self) -> bool:
        return not self.dims or self.dims[0] is None

    def shape(self, batch: int = 1, fill: int = 1) -> tuple[int, ...]:
        """A concrete shape: a dynamic first dim becomes ``batch``, other dynamic dims ``fill``."""
        return tuple((batch if i == 0 else fill) if d is None else d for i, d in enumerate(self.dims))


def describe(a: np.ndarray) -> str:
    """``int64[8x16]``: how an array is named in messages."""
    return f"{a.dtype}[{'x'.join(map(str, a.shape))}]"


def graph_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph's real inputs (initializers listed as inputs by old exporters excluded)."""
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        t = value.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = np.dtype(object)  # string or an exotic type: conform() names it
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim
        )
        specs.append(InputSpec(value.name, dtype, dims))
    return specs


def session_inputs(session: Any) -> list[InputSpec]:
    """The same for an onnxruntime InferenceSession."""
    specs = []
    for i in session.get_inputs():
        dtype = np.dtype(_ORT_TYPES.get(i.type, "object"))
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape)
        specs.append(InputSpec(i.name, dtype, dims))
    return specs


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device) or array-like as a numpy array, its dtype kept."""
    if hasattr(x, "detach"):
        return np.asarray(x.detach().cpu().numpy())
    return np.asarray(x)


def conform(value: Any, spec: InputSpec, what: str = "input", check_shape: bool = False) -> np.ndarray:
    """``value`` as the graph input ``spec`` wants it; InputError if it cannot be.

    Numbers are cast within their kind: any number to a float input (float64 or uint8 images to
    float32), integers and booleans to an integer or bool input. A float array for an integer
    input is refused (token ids rounded silently would be wrong data). ``check_shape``: the rank
    and every static dim after the first must match (the first is the batch).
    """
    a = to_numpy(value)
    target = spec.dtype
    if a.dtype.kind not in "biuf" or target.kind not in "biuf":
        raise InputError(
            f"{what} {describe(a)}: the model's input {spec.name!r} is {spec}"
            + (" (only numeric arrays can be fed)" if a.dtype.kind not in "biuf" else " (not supported)")
        )
    if target.kind in "iub" and a.dtype.kind == "f":
        raise InputError(
            f"{what} {describe(a)}: the model's input {spec.name!r} is {spec} (integer data expected, "
            "got floats)"
        )
    static_ok = a.ndim == len(spec.dims) and all(
        d is None or d == s for d, s in list(zip(spec.dims, a.shape, strict=True))[1:]
    )
    if check_shape and not static_ok:
        raise InputError(f"{what} {describe(a)}: the model's input {spec.name!r} is {spec}")
    return a if a.dtype == target else a.astype(target)


def feeds(
    specs: Sequence[InputSpec],
    args: Sequence[Any] = (),
    named: Mapping[str, Any] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The session feeds from positional ``args`` and/or ``named`` values.

    Positional values take ``names`` in order (the task's input names; default: the graph's).
    A name the task has but the graph lacks is dropped: the exporter removes inputs the model
    does not use. A graph input with no value, or a name neither knows, is an InputError.
    """
    graph = {s.name: s for s in specs}
    order = list(names) if names is not None else list(graph)
    if len(args) > len(order):
        raise InputError(f"{len(args)} positional inputs given; the model takes {len(order)}: {order}")
    given: dict[str, Any] = dict(zip(order[: len(args)], args, strict=True))
    for k, v in (named or {}).items():
        if k in given:
            raise InputError(f"input {k!r} given twice (positionally and by name)")
        given[k] = v
    unknown = [k for k in given if k not in graph and k not in order]
    if unknown:
        raise InputError(f"the model has no input {unknown[0]!r} (its inputs: {list(graph)})")
    missing = [n for n in graph if n not in given]
    if missing:
        raise InputError(f"no value for model input(s) {missing} (given: {list(given)})")
    return {n: conform(given[n], spec, f"input {n!r}") for n, spec in graph.items()}


# -- torch-side helpers (duck-typed: no torch import here) ---------------------------------------
def ordered_for(forward: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword inputs in the order of ``forward``'s parameters.

    The ONNX exporter binds keyword inputs to ``forward``'s signature and names graph inputs in
    that order; ordering them the same way here keeps every name on its own tensor. A key that
    is not a named parameter would be dropped by the exporter: refused instead.
    """
    try:
        params = [
            p.name
            for p in inspect.signature(forward).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
    except (TypeError, ValueError):
        return dict(inputs)
    unknown = [k for k in inputs if k not in params]
    if unknown:
        raise InputError(
            f"example_inputs key {unknown[0]!r} is not a named parameter of the model's forward "
            f"(it takes {params})"
        )
    return {k: inputs[k] for k in params if k in inputs}


def call_model(model: Any, inputs: tuple[Any, ...] | Mapping[str, Any]) -> Any:
    """``model(*inputs)``, or ``model(**inputs)`` for keyword inputs."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(*inputs)


def first_output(out: Any) -> Any:
    """The first output of a forward: a tensor, a tuple's first, a dict's (ModelOutput's) first."""
    if isinstance(out, Mapping):
        return next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


# -- synthetic inputs --------------------------------------------------------------------------
def id_limit(model: onnx.ModelProto, name: str) -> int | None:
    """The size of the smallest table the input indexes (a Gather on a weight), if any.

    Token ids index an embedding table: ids below its row count are valid whatever the vocabulary.
    Casts and reshapes between the input and the Gather are followed.
    """
    tables = {i.name: int(i.dims[0]) for i in model.graph.initializer if len(i.dims) >= 1}
    reached, limits = {name}, []
    for node in model.graph.node:  # exported graphs are topologically sorted
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in reached:
            if node.input[0] in tables:
                limits.append(tables[node.input[0]])
        elif node.op_type in ("Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity") and (
            node.input and node.input[0] in reached
        ):
            reached.update(node.output)
    return min(limits) if limits else None


def synthetic(
    spec: InputSpec,
    shape: Sequence[int],
    rng: np.random.Generator,
    model: onnx.ModelProto | None = None,
) -> np.ndarray:
    """Random data for one input, following its dtype and range.

    Floats: standard normal. Booleans and integer masks: ones. Other integers: uniform below the
    size of the embedding table they index (``model``'s), else zeros (a valid index anywhere).
    """
    dtype = spec.dtype
    if dtype.kind == "f":
        return rng.standard_normal(tuple(shape)).astype(dtype)
    if dtype.kind == "b" or any(w in spec.name.lower() for w in _MASK_WORDS):
        return np.ones(tuple(shape), dtype=dtype)
    limit = id_limit(model, spec.name) if model is not None else None
    if limit:
        return rng.integers(0, limit, size=tuple(shape)).astype(dtype)
    return np.zeros(tuple(shape), dtype=dtype)
