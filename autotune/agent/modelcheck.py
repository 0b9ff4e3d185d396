"""The upload validator: is a file a self-contained, standard ONNX model that fits in memory?

Runs in the ``validate`` job subprocess (:mod:`autotune.agent.job`), never in the agent: it
parses untrusted bytes. It walks every graph (the main one, every subgraph of ``If``, ``Loop``
and ``Scan`` at any depth, every model-local function and every ``training_info`` graph) and
every attribute (tensors, sparse tensors), and refuses:

- external data anywhere (the agent would open a file the client named);
- operators outside the standard and onnxruntime domains, unless the node calls a function the
  model itself defines (that function's body is checked the same way);
- tensors larger than the memory budget: declared ones (initializers and attribute values,
  sparse ones at their dense size) and those shape inference can size, in every subgraph and
  inside inlined functions, with small constant computations (``Cast``, ``Concat``, arithmetic,
  ...) folded first so a shape cannot hide behind them, such as ``ConstantOfShape`` of a constant
  ``[100000, 100000]``;
- anything ``onnx.checker`` refuses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autotune._util import error_line

#: operator domains a model may use: the ONNX standard sets and onnxruntime's built-in
#: contrib ops. Anything else would need a custom-op library, which the agent never loads.
ALLOWED_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft", "com.microsoft.nchwc"}
)
#: constants computed while folding stay this small (in elements): folding is never the bomb
MAX_FOLDED = 4096


def _subgraphs(nodes: Any) -> Iterator[Any]:
    """Every subgraph in the attributes of ``nodes``, recursively."""
    for node in nodes:
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield g
                yield from _subgraphs(g.node)


def _graphs(model: Any) -> Iterator[Any]:
    """Every graph: the main one, ``training_info``'s, and all subgraphs (also in functions)."""
    tops = [model.graph]
    for info in model.training_info:
        tops += [g for g in (info.initialization, info.algorithm) if g.node or g.initializer]
    for top in tops:
        yield top
        yield from _subgraphs(top.node)
    for function in model.functions:
        yield from _subgraphs(function.node)


def _node_lists(model: Any) -> Iterator[Any]:
    """The node list of every graph and of every function."""
    for graph in _graphs(model):
        yield graph.node
    for function in model.functions:
        yield function.node


def _attributes(model: Any) -> Iterator[Any]:
    """The attributes of every node, in every graph and function."""
    for nodes in _node_lists(model):
        for node in nodes:
            yield from node.attribute


def _tensors(model: Any, in_graph: str, one: str, many: str) -> Iterator[Any]:
    """The tensors a graph lists under ``in_graph``, and node attributes hold as ``one``/``many``."""
    for graph in _graphs(model):
        yield from getattr(graph, in_graph)
    for attr in _attributes(model):
        if attr.HasField(one):
            yield getattr(attr, one)
        yield from getattr(attr, many)


def _sparse_tensors(model: Any) -> Iterator[Any]:
    return _tensors(model, "sparse_initializer", "sparse_tensor", "sparse_tensors")


def _dense_tensors(model: Any) -> Iterator[Any]:
    """Every dense TensorProto: initializers, attribute values, the parts of sparse tensors."""
    yield from _tensors(model, "initializer", "t", "tensors")
    for sparse in _sparse_tensors(model):
        yield sparse.values
        yield sparse.indices


def _itemsize(elem_type: int) -> int:
    import onnx

    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except (KeyError, TypeError, ValueError):
        return 8


def _largest_declared_tensor(model: Any) -> tuple[str, int]:
    """Name and byte size of the largest tensor the model spells out (sparse ones dense)."""
    best = ("", 0)
    for t in _dense_tensors(model):
        size = math.prod(max(0, d) for d in t.dims) * _itemsize(t.data_type)
        if size > best[1]:
            best = (t.name, size)
    for s in _sparse_tensors(model):  # what a runtime expands it to
        size = math.prod(max(0, d) for d in s.dims) * _itemsize(s.values.data_type)
        if size > best[1]:
            best = (f"{s.values.name} (sparse)", size)
    return best


# --------------------------------------------------------------------------- constant folding


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _small(array: Any) -> np.ndarray | None:
    a = np.asarray(array)
    return a if a.size <= MAX_FOLDED else None


def _shape_of(name: str, shapes: dict[str, list[int]]) -> np.ndarray | None:
    dims = shapes.get(name)
    return None if dims is None or any(d < 0 for d in dims) else np.array(dims, np.int64)


def _constant_value(node: Any) -> np.ndarray | None:
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "value" and math.prod(attr.t.dims) <= MAX_FOLDED:
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_int":
            return np.array(attr.i, np.int64)
        if attr.name == "value_ints" and len(attr.ints) <= MAX_FOLDED:
            return np.array(attr.ints, np.int64)
        if attr.name == "value_float":
            return np.array(attr.f, np.float32)
        if attr.name == "value_floats" and len(attr.floats) <= MAX_FOLDED:
            return np.array(attr.floats, np.float32)
    return None


def _reshape(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    dims = [int(x.shape[i]) if d == 0 else int(d) for i, d in enumerate(shape)]
    return x.reshape(dims)


def _axes(node: Any, args: list[np.ndarray], attrs: dict[str, Any]) -> list[int]:
    if len(args) > 1:
        return [int(a) for a in args[1]]
    return [int(a) for a in attrs.get("axes", [])]


def _slice(args: list[np.ndarray]) -> np.ndarray:
    x, starts, ends = args[0], args[1], args[2]
    axes = args[3] if len(args) > 3 else np.arange(len(starts))
    steps = args[4] if len(args) > 4 else np.ones(len(starts), np.int64)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        index[int(a)] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _range(args: list[np.ndarray]) -> np.ndarray | None:
    start, limit, delta = (a.item() for a in args)
    if delta == 0 or math.ceil((limit - start) / delta) > MAX_FOLDED:
        return None
    return np.arange(start, limit, delta, dtype=args[0].dtype)


def _constant_of_shape(args: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray | None:
    from onnx import numpy_helper

    shape = [int(d) for d in args[0]]
    if any(d < 0 for d in shape) or math.prod(shape) > MAX_FOLDED:
        return None
    value = numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    return np.full(shape, value.reshape(-1)[0], value.dtype)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)  # ONNX integer division truncates
    return a / b


_ELEMENTWISE: dict[str, Callable[..., np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _div, "Pow": np.power,
    "Neg": np.negative, "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil,
    "Round": np.round, "Sqrt": np.sqrt, "Reciprocal": np.reciprocal, "Sign": np.sign,
    "Equal": np.equal, "Less": np.less, "Greater": np.greater, "Not": np.logical_not,
    "And": np.logical_and, "Or": np.logical_or, "Where": np.where,
    "Max": lambda *a: np.maximum.reduce(np.broadcast_arrays(*a)),
    "Min": lambda *a: np.minimum.reduce(np.broadcast_arrays(*a)),
}  # fmt: skip


_LOGICAL = frozenset({"Equal", "Less", "Greater", "Not", "And", "Or"})


def _evaluate(node: Any, args: list[np.ndarray]) -> np.ndarray | None:
    """A node's output from small known inputs (None: not an operator folded here)."""
    import onnx

    op, attrs = node.op_type, _attrs(node)
    if op in _ELEMENTWISE:
        with np.errstate(all="ignore"):
            out = np.asarray(_ELEMENTWISE[op](*args))
        if op in _LOGICAL:
            return out
        return out.astype(args[1].dtype if op == "Where" else args[0].dtype)  # ONNX keeps types
    if op == "Identity":
        return args[0]
    if op == "Cast":
        return args[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op == "CastLike":
        return args[0].astype(args[1].dtype)
    if op == "Concat":
        return np.concatenate(args, axis=attrs.get("axis", 0))
    if op == "Unsqueeze":
        return np.expand_dims(args[0], tuple(_axes(node, args, attrs)))
    if op == "Squeeze":
        axes = _axes(node, args, attrs)
        return np.squeeze(args[0], tuple(axes)) if axes else np.squeeze(args[0])
    if op == "Reshape":
        return _reshape(args[0], args[1])
    if op == "Gather":
        return np.take(args[0], args[1], axis=attrs.get("axis", 0))
    if op == "Slice":
        return _slice(args)
    if op == "Range":
        return _range(args)
    if op == "ConstantOfShape":
        return _constant_of_shape(args, attrs)
    if op == "ReduceProd" and len(args) == 1 and "axes" not in attrs:
        return np.prod(args[0], keepdims=bool(attrs.get("keepdims", 1)))
    return None


def _fold(graph: Any, outer: dict[str, np.ndarray], shapes: dict[str, list[int]]) -> None:
    """Replace every node computable from small constants by a ``Constant`` node of its value,
    in ``graph`` and its subgraphs, so shape inference sees through it (ONNX's own data
    propagation stops at ``Cast``, and never reaches into a subgraph). ``outer``: the enclosing
    graphs' constants; ``shapes``: static shapes inferred so far (for ``Shape`` and ``Size``)."""
    from onnx import helper, numpy_helper

    known = dict(outer)
    inputs = {i.name for i in graph.input}
    for t in graph.initializer:
        if math.prod(t.dims) <= MAX_FOLDED and t.name not in inputs:  # an input's default is no constant
            known[t.name] = numpy_helper.to_array(t)
    local = {t.name for t in graph.initializer} | inputs
    for node in graph.node:
        local.update(node.output)
    aliases: dict[str, str] = {}  # an enclosing graph's constant -> its local copy's name
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name and name not in local and name in known:
                node.input[i] = aliases.setdefault(name, f"{name}__outer{len(aliases)}")
                known[node.input[i]] = known[name]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _fold(sub, known, shapes)
        if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            continue
        try:
            value = _node_value(node, known, shapes)
        except Exception:  # noqa: BLE001 - a value not computed is only a value not known
            value = None
        if value is None:
            continue
        known[node.output[0]] = value
        if node.op_type != "Constant":
            tensor = numpy_helper.from_array(value, node.output[0])
            node.CopyFrom(helper.make_node("Constant", [], [node.output[0]], value=tensor))
    if aliases:  # the enclosing graphs' constants, defined in this graph
        nodes = [
            helper.make_node("Constant", [], [alias], value=numpy_helper.from_array(known[alias], alias))
            for alias in aliases.values()
        ]
        nodes += list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)


def _node_value(node: Any, known: dict[str, np.ndarray], shapes: dict[str, list[int]]) -> np.ndarray | None:
    """A node's (small) output value, if it follows from what is known."""
    if node.op_type == "Constant":
        return _constant_value(node)
    if node.op_type in ("Shape", "Size") and node.input:
        dims = _shape_of(node.input[0], shapes)
        if dims is None:
            return None
        if node.op_type == "Size":
            return np.array(math.prod(dims), np.int64)
        attrs = _attrs(node)
        return dims[attrs.get("start", 0) : attrs.get("end")]
    args = [known.get(n) for n in node.input]
    if not args or any(a is None for a in args):  # an omitted optional input ("") too
        return None
    value = _evaluate(node, args)  # type: ignore[arg-type]
    return None if value is None else _small(value)


# --------------------------------------------------------------------------- inference


def _static_shapes(model: Any) -> tuple[dict[str, list[int]], list[tuple[str, str, int]]]:
    """Shape inference over every graph: the static shapes by name, and (graph, tensor, bytes)
    of every fully known tensor."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    sized: list[tuple[str, str, int]] = []
    for graph in [inferred.graph, *_subgraphs(inferred.graph.node)]:
        for vi in [*graph.value_info, *graph.output, *graph.input]:
            t = vi.type.tensor_type
            if not t.HasField("shape"):
                continue
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            shapes[vi.name] = dims
            if t.elem_type and all(d >= 0 for d in dims):
                sized.append((graph.name, vi.name, math.prod(dims) * _itemsize(t.elem_type)))
    return shapes, sized


def _lighten(model: Any) -> None:
    """Large initializers become graph inputs of the same type and shape: inference needs their
    shapes only, and the analysis then holds no copy of the weights."""
    from onnx import helper

    graph = model.graph
    inputs = {i.name for i in graph.input}
    keep = []
    for t in graph.initializer:
        if math.prod(t.dims) <= MAX_FOLDED:
            keep.append(t)
            continue
        if t.name not in inputs:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _largest_inferred_tensor(model: Any) -> tuple[str, int]:
    """Where, and the byte size of, the largest tensor shape inference can size, in any graph
    and inside every function (inlined). Changes ``model`` (the validator's own copy)."""
    import onnx.inliner

    _lighten(model)
    del model.training_info[:]  # not run by inference sessions; its tensors were checked above
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    shapes: dict[str, list[int]] = {}
    for _ in range(2):  # a second pass folds Shape/Size of what the first one sized
        _fold(model.graph, {}, shapes)
        shapes, sized = _static_shapes(model)
    best = ("", 0)
    for graph, name, size in sized:
        if size > best[1]:
            best = (name if graph == model.graph.name else f"{name} (in graph {graph!r})", size)
    return best


def validate_model(path: Path, max_tensor_bytes: int = 0) -> str | None:
    """Why ``path`` is not acceptable; None when it is. ``max_tensor_bytes`` 0: no size check."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - not a protobuf at all
        return f"not an ONNX model ({error_line(exc)})"
    if not model.graph.node and not model.graph.output:
        return "not an ONNX model (no graph)"
    for tensor in _dense_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            return f"tensor {tensor.name!r} refers to external data; upload a self-contained model"
    local = {(f.domain, f.name) for f in model.functions}
    for nodes in _node_lists(model):
        for node in nodes:
            if node.domain not in ALLOWED_DOMAINS and (node.domain, node.op_type) not in local:
                return f"operator {node.op_type!r} of custom domain {node.domain!r} is not allowed"
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001
        return f"onnx.checker: {error_line(exc, with_type=False)}"
    if max_tensor_bytes > 0:
        checks = (("declares", _largest_declared_tensor), ("would take", _largest_inferred_tensor))
        for verb, largest in checks:
            try:
                name, size = largest(model)
            except Exception as exc:  # noqa: BLE001 - inference failing is a reason to refuse
                return f"shape inference failed: {error_line(exc, with_type=False)}"
            if size > max_tensor_bytes:
                return (
                    f"tensor {name!r} {verb} {size / 2**20:.0f} MiB, over the agent's memory budget "
                    f"of {max_tensor_bytes / 2**20:.0f} MiB per job"
                )
    return None
