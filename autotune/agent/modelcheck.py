"""The upload validator: is a file a self-contained, standard ONNX model that fits in memory?

Runs in the ``validate`` job subprocess (:mod:`autotune.agent.job`), never in the agent: it
parses untrusted bytes. It walks every graph, every model-local function and every attribute
(subgraphs, tensors, sparse tensors, inside functions too) and refuses:

- external data anywhere (the agent would open a file the client named);
- operators outside the standard and onnxruntime domains, unless the node calls a function the
  model itself defines (that function's body is checked the same way);
- tensors whose statically known size exceeds the memory budget (shape inference), such as
  ``ConstantOfShape`` of a constant ``[100000, 100000]``;
- anything ``onnx.checker`` refuses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autotune._util import error_line

#: operator domains a model may use: the ONNX standard sets and onnxruntime's built-in
#: contrib ops. Anything else would need a custom-op library, which the agent never loads.
ALLOWED_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft", "com.microsoft.nchwc"}
)


def _graphs_in(nodes: Any) -> Iterator[Any]:
    """Every subgraph in the attributes of ``nodes``, recursively."""
    for node in nodes:
        for attr in node.attribute:
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for g in subs:
                yield g
                yield from _graphs_in(g.node)


def _node_lists(model: Any) -> Iterator[Any]:
    """The node list of the main graph, of every function, and of every subgraph in them."""
    yield model.graph.node
    for g in _graphs_in(model.graph.node):
        yield g.node
    for function in model.functions:
        yield function.node
        for g in _graphs_in(function.node):
            yield g.node


def _tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto in the model: initializers, sparse ones, and attribute values."""
    graphs = [model.graph, *_graphs_in(model.graph.node)]
    for function in model.functions:
        graphs += list(_graphs_in(function.node))
    for graph in graphs:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for nodes in _node_lists(model):
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices
                for sparse in attr.sparse_tensors:
                    yield sparse.values
                    yield sparse.indices


def _largest_static_tensor(model: Any) -> tuple[str, int]:
    """Name and byte size of the largest tensor whose shape inference knows fully."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    values = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    best = ("", 0)
    for vi in values:
        t = vi.type.tensor_type
        if not t.HasField("shape") or not t.elem_type:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if any(d < 0 for d in dims):
            continue
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 8
        size = math.prod(dims) * itemsize
        if size > best[1]:
            best = (vi.name, size)
    return best  # initializers are bytes in the file: the upload cap bounds them


def validate_model(path: Path, max_tensor_bytes: int = 0) -> str | None:
    """Why ``path`` is not acceptable; None when it is. ``max_tensor_bytes`` 0: no size check."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - not a protobuf at all
        return f"not an ONNX model ({error_line(exc)})"
    if not model.graph.node and not model.graph.output:
        return "not an ONNX model (no graph)"
    for tensor in _tensors(model):
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
        try:
            name, size = _largest_static_tensor(model)
        except Exception as exc:  # noqa: BLE001 - inference failing is a reason to refuse
            return f"shape inference failed: {error_line(exc, with_type=False)}"
        if size > max_tensor_bytes:
            return (
                f"tensor {name!r} would take {size / 2**20:.0f} MiB, over the agent's memory budget "
                f"of {max_tensor_bytes / 2**20:.0f} MiB per job"
            )
    return None
