"""What the latency predictor reads off the reference ONNX model: per weighted node, its
multiply-adds, parameters, output channels and activations, and the node graph for propagating
pruned channel widths (:mod:`autotune.predictor`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class LayerStats:
    op: str
    macs: float
    params: float
    channels: float
    activations: float = 0.0  # output elements: the memory traffic an elementwise op after it pays


def layer_stats(onnx_path: Path, inputs: dict[str, np.ndarray]) -> dict[str, LayerStats]:
    """Multiply-adds, parameters and output channels of each weighted node, by node name."""
    model = onnx.load(str(onnx_path))
    for vi in model.graph.input:  # static shapes from the real inputs, for shape inference
        if vi.name in inputs:
            dims = vi.type.tensor_type.shape.dim
            for d, size in zip(dims, inputs[vi.name].shape, strict=False):
                d.dim_value = int(size)
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {
        vi.name: [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]
    }
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    stats: dict[str, LayerStats] = {}
    for node in model.graph.node:
        if node.op_type not in OPS or len(node.input) < 2 or node.input[1] not in weights:
            continue
        w = weights[node.input[1]]
        params = float(np.prod(w)) + (
            float(np.prod(weights[node.input[2]]))
            if len(node.input) > 2 and node.input[2] in weights
            else 0.0
        )
        if node.op_type == "Conv":
            out = shapes.get(node.output[0], [1, w[0], 1, 1])
            macs = float(np.prod(out[:1] + out[2:])) * float(np.prod(w))
            channels = float(w[0])
            acts = float(np.prod(out))
        else:
            rows = shapes.get(node.input[0], [1, w[0]])[:-1]
            macs = float(np.prod(rows or [1])) * float(np.prod(w))
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            channels = float(w[0] if trans_b else w[-1])
            acts = float(np.prod(rows or [1])) * channels
        stats[node.name] = LayerStats(node.op_type, macs, params, channels, acts)
    return stats


@dataclass(frozen=True)
class GraphNode:
    """One ONNX node as the channel propagation sees it."""

    name: str
    op: str
    inputs: tuple[str, ...]  # data inputs (weights left out)
    outputs: tuple[str, ...]
    depthwise: bool  # a grouped Conv with one group per channel: its channels follow its input


ELEMENTWISE = ("Add", "Sum", "Sub", "Mul", "Max", "Min")
RESHAPING = ("Flatten", "Reshape", "GlobalAveragePool", "Concat", "Split")


def model_graph(onnx_path: Path) -> list[GraphNode]:
    """The nodes in order, for propagating channel widths (:meth:`LatencyPredictor.scales`)."""
    model = onnx.load(str(onnx_path))
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = weights.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
        depthwise = bool(w) and group > 1 and w is not None and w[1] == 1
        data = tuple(i for i in n.input if i and i not in weights)
        nodes.append(GraphNode(n.name, n.op_type, data, tuple(n.output), depthwise))
    return nodes
