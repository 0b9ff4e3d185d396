"""What the latency predictor reads off an ONNX artifact: the work it asks of onnxruntime, as
onnxruntime's own graph optimiser will run it (:mod:`autotune.study._predictor`).

The artifact's weighted nodes give the multiply-adds (from the real, pruned shapes); the graph
onnxruntime optimises from it says which kernel each of them runs on: a fused int8 kernel
(QLinearConv, QGemm, ...), or float, laid out for the CPU (NCHWc) or left as written (a QDQ node
pair the optimiser could not fuse, as with s8 activations on CPUs without VNNI); and how many
elements the small nodes between them (QuantizeLinear, Transpose, layout reorders, Add) read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from autotune.devices import optimized_graph, quantized_kernels
from autotune.records import RuntimeOptions

__all__ = ["KernelWork", "LayerStats", "kernel_work", "layer_stats", "optimized_graph"]

OPS = ("Conv", "Gemm", "MatMul")
#: small nodes between the layers, by family: each costs in proportion to the tensor it reads
SMALL_OPS = {
    "QuantizeLinear": "qdq",
    "DequantizeLinear": "qdq",
    "ReorderInput": "layout",
    "ReorderOutput": "layout",
    "Transpose": "layout",
    **dict.fromkeys(("Add", "QLinearAdd", "Mul", "QLinearMul", "HardSigmoid", "Sigmoid"), "elementwise"),
}
FAMILIES = ("qdq", "layout", "elementwise")
KERNELS = ("int8", "fp32", "fp32_plain", "int8_dw", "fp32_dw")


@dataclass(frozen=True)
class LayerStats:
    op: str
    macs: float
    params: float
    channels: float
    activations: float = 0.0  # output elements
    depthwise: bool = False


def layer_stats(onnx_path: Path, inputs: dict[str, np.ndarray] | None = None) -> dict[str, LayerStats]:
    """Multiply-adds, parameters and output channels of each weighted node, by node name; a QDQ
    node's weights are read through their DequantizeLinear."""
    return _layer_stats(*_inferred(onnx_path, inputs))


def _inferred(
    onnx_path: Path, inputs: dict[str, np.ndarray] | None
) -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    """The model, and its tensors' shapes inferred from the real inputs' static shapes."""
    model = onnx.load(str(onnx_path))
    for vi in model.graph.input:
        if inputs and vi.name in inputs:
            dims = vi.type.tensor_type.shape.dim
            for d, size in zip(dims, inputs[vi.name].shape, strict=False):
                d.dim_value = int(size)
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {
        vi.name: [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]
    }
    return model, shapes


def _layer_stats(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> dict[str, LayerStats]:
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for n in model.graph.node:  # QDQ: the weight tensor is DequantizeLinear's output
        if n.op_type == "DequantizeLinear" and n.input[0] in weights:
            weights[n.output[0]] = weights[n.input[0]]
    stats: dict[str, LayerStats] = {}
    for node in model.graph.node:
        if node.op_type not in OPS or len(node.input) < 2 or node.input[1] not in weights:
            continue
        w = weights[node.input[1]]
        bias = weights.get(node.input[2]) if len(node.input) > 2 else None
        params = float(np.prod(w)) + (float(np.prod(bias)) if bias else 0.0)
        if node.op_type == "Conv":
            out = shapes.get(node.output[0], [1, w[0], 1, 1])
            macs = float(np.prod(out[:1] + out[2:])) * float(np.prod(w))
            channels, acts = float(w[0]), float(np.prod(out))
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            depthwise = group > 1 and w[1] == 1
        else:
            rows = shapes.get(node.input[0], [1, w[0]])[:-1]
            macs = float(np.prod(rows or [1])) * float(np.prod(w))
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            channels = float(w[0] if trans_b else w[-1])
            acts, depthwise = float(np.prod(rows or [1])) * channels, False
        stats[node.name] = LayerStats(node.op_type, macs, params, channels, acts, depthwise)
    return stats


@dataclass
class KernelWork:
    """The work one artifact asks of onnxruntime."""

    macs: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KERNELS, 0.0))
    activations: dict[str, float] = field(default_factory=lambda: {"int8": 0.0, "fp32": 0.0})
    elements: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FAMILIES, 0.0))
    total_nodes: float = 0.0


def kernel_work(
    onnx_path: Path, inputs: dict[str, np.ndarray] | None = None, runtime: RuntimeOptions | None = None
) -> KernelWork:
    """Multiply-adds by the kernel onnxruntime runs them on, output activations by precision,
    and the elements the optimised graph's small nodes read, by family."""
    graph = optimized_graph(onnx_path, runtime)
    model, shapes = _inferred(onnx_path, inputs)
    int8 = set(quantized_kernels(graph))  # int8, and int4 MatMulNBits (int8 compute)
    plain = {n.name for n in graph.node if n.op_type in OPS and n.domain in ("", "ai.onnx")}
    work = KernelWork()
    for name, s in _layer_stats(model, shapes).items():
        kernel = "int8" if name in int8 else "fp32_plain" if name in plain else "fp32"
        if s.depthwise and kernel != "fp32_plain":
            kernel += "_dw"
        work.macs[kernel] += s.macs
        work.activations["int8" if kernel.startswith("int8") else "fp32"] += s.activations
    for vi in graph.value_info:  # the optimiser's own tensors (reorders, fused outputs)
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(dims):
            shapes.setdefault(vi.name, dims)
    producer = {out: n for n in graph.node for out in n.output}

    def size(tensor: str, hops: int = 6) -> float:
        """Elements of a tensor; one the optimiser named has its producer's input's size (layout
        changes, Q/DQ and elementwise ops keep the size)."""
        if tensor in shapes:
            return float(np.prod(shapes[tensor]))
        node = producer.get(tensor)
        return size(node.input[0], hops - 1) if node is not None and node.input and hops else 0.0

    for n in graph.node:
        if n.op_type in SMALL_OPS and n.input:
            work.elements[SMALL_OPS[n.op_type]] += size(n.input[0])
    work.total_nodes = float(len(graph.node))
    return work
