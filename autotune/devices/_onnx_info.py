"""What an ONNX artifact asks of a GPU builder: int8 (QDQ nodes), fp16 segments, 2:4 weights.

Pure ONNX + numpy (no GPU): the TensorRT backends turn these traits into builder flags, and the
tests check them here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class OnnxTraits:
    """Precision and sparsity facts about one model."""

    qdq: bool = False  # explicit int8 quantization: QuantizeLinear / DequantizeLinear nodes
    fp16: bool = False  # fp16 segments (fp16 initializers or Casts to fp16)
    sparse_2_4: list[str] = field(default_factory=list)  # weight initializers in 2:4 layout
    ops: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        parts = [p for p, on in (("int8 QDQ", self.qdq), ("fp16", self.fp16)) if on]
        if self.sparse_2_4:
            parts.append(f"2:4 weights x{len(self.sparse_2_4)}")
        return ", ".join(parts) or "fp32"


def is_2_4(weight: np.ndarray) -> bool:
    """True when every group of 4 along the last axis holds at least 2 zeros (and it divides)."""
    if weight.ndim < 2 or weight.shape[-1] % 4 or weight.size == 0:
        return False
    groups = weight.reshape(-1, 4)
    return bool(((groups == 0).sum(axis=1) >= 2).all()) and bool((groups != 0).any())


def _weight_in_last(op: str, w: np.ndarray, trans_b: bool) -> np.ndarray:
    """Put the reduction (input-channel) axis last, the layout TensorRT's sparse kernels use."""
    if op == "Conv" and w.ndim == 4:  # (O, I, kh, kw) -> (O, kh, kw, I)
        return np.transpose(w, (0, 2, 3, 1))
    if op == "Gemm":
        return w if trans_b else w.T  # (N, K) when transB=1
    if op == "MatMul" and w.ndim == 2:  # (K, N) -> (N, K)
        return w.T
    return w


def analyse(model: onnx.ModelProto | str | Path) -> OnnxTraits:
    """Read the traits of ``model`` (a path or a loaded ModelProto)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    traits = OnnxTraits(ops=Counter(n.op_type for n in graph.node))
    traits.qdq = any(op in traits.ops for op in _QDQ)
    traits.fp16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)
        for n in graph.node
    )
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        name = node.input[1]
        # through a DequantizeLinear (int8 QDQ weights): the int8 initializer keeps the zeros
        dq = producers.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear":
            name = dq.input[0]
        if name not in inits:
            continue
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        w = _weight_in_last(node.op_type, numpy_helper.to_array(inits[name]), trans_b)
        if is_2_4(w):
            traits.sparse_2_4.append(name)
    return traits


def static_shapes(inputs: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """The shapes a builder should optimise for: exactly the measured inputs."""
    return {name: tuple(int(d) for d in a.shape) for name, a in inputs.items()}
