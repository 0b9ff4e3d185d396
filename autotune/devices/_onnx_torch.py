"""A small ONNX -> torch interpreter, so ``torch-cuda`` measures the artifact itself.

The ONNX file is what the search measures and evaluates everywhere; running the same graph
through torch ops (cuDNN, cuBLAS, CUDA graphs) keeps that promise on the torch backend. It covers
the operators torch.onnx emits for CNNs, MLPs and transformer encoders (the zoo models); any
other operator is refused by name at load time (a ``build_error``), never silently skipped.
Integer tensors (shape arithmetic) stay on the CPU, so CUDA graphs can capture the float work.
Int8 QDQ graphs are refused: torch has no int8 kernels for them, so latency would be a lie.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

_DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}

Op = Callable[[list[Any], dict[str, Any]], Any]


def _pads(x: torch.Tensor, pads: Sequence[int], value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """ONNX pads (begin..., end...) -> symmetric torch padding, padding explicitly if lopsided."""
    n = len(pads) // 2
    begin, end = list(pads[:n]), list(pads[n:])
    if begin == end:
        return x, begin
    spec: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        spec += [b, e]
    return F.pad(x, spec, value=value), [0] * n


def _conv(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x, w = i[0], i[1]
    b = i[2] if len(i) > 2 else None
    nd = w.dim() - 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("Conv auto_pad")
    x, pad = _pads(x, a.get("pads", [0] * 2 * nd))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, w, b, a.get("strides", 1), pad, a.get("dilations", 1), a.get("group", 1))


def _pool(kind: str) -> Op:
    def op(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
        x = i[0]
        k = a["kernel_shape"]
        nd = len(k)
        fill = -math.inf if kind == "max" else 0.0
        x, pad = _pads(x, a.get("pads", [0] * 2 * nd), fill)
        strides = a.get("strides", [1] * nd)
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "max":
            max_pool: Callable[..., torch.Tensor] = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
            return max_pool(x, k, strides, pad, a.get("dilations", 1), ceil)
        avg_pool: Callable[..., torch.Tensor] = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
        return avg_pool(x, k, strides, pad, ceil, bool(a.get("count_include_pad", 0)))

    return op


def _gemm(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x = i[0].t() if a.get("transA", 0) else i[0]
    w = i[1].t() if a.get("transB", 0) else i[1]
    y = a.get("alpha", 1.0) * (x @ w)
    if len(i) > 2 and i[2] is not None:
        y = y + a.get("beta", 1.0) * i[2]
    return y


def _ints(t: Any) -> list[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


def _reshape(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x, shape = i[0], _ints(i[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[d] if s == 0 else s for d, s in enumerate(shape)]
    return x.reshape(shape)


def _axes(i: list[Any], a: dict[str, Any]) -> list[int] | None:
    if len(i) > 1 and i[1] is not None:
        return _ints(i[1])
    return list(a["axes"]) if "axes" in a else None


def _unsqueeze(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x = i[0]
    axes = _axes(i, a) or []
    rank = x.dim() + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    axes = _axes(i, a)
    if axes is None:
        return i[0].squeeze()
    return i[0].squeeze(tuple(ax % i[0].dim() for ax in axes))


def _gather(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x, idx = i[0], i[1].to(i[0].device)
    axis = a.get("axis", 0) % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1).long())
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))


def _shape(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    dims = list(i[0].shape)[a.get("start", 0) : a.get("end")]
    return torch.tensor(dims, dtype=torch.int64)  # on the CPU: shape arithmetic never syncs the GPU


def _reduce_mean(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    axes = _axes(i, a)
    keep = bool(a.get("keepdims", 1))
    if axes is None:
        return i[0].mean().reshape([1] * i[0].dim()) if keep else i[0].mean()
    return i[0].mean(dim=axes, keepdim=keep)


def _layer_norm(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x = i[0]
    axis = a.get("axis", -1) % x.dim()
    bias = i[2] if len(i) > 2 else None
    return F.layer_norm(x, x.shape[axis:], i[1], bias, a.get("epsilon", 1e-5))


def _slice(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x = i[0]
    starts, ends = _ints(i[1]), _ints(i[2])
    axes = _ints(i[3]) if len(i) > 3 and i[3] is not None else list(range(len(starts)))
    steps = _ints(i[4]) if len(i) > 4 and i[4] is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        if st < 0:
            raise NotImplementedError("Slice with a negative step")
        size = x.shape[ax]
        index[ax % x.dim()] = slice(max(-size, min(s, size)), max(-size, min(e, size)), st)
    return x[tuple(index)]


def _clip(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    lo = i[1] if len(i) > 1 and i[1] is not None else a.get("min")
    hi = i[2] if len(i) > 2 and i[2] is not None else a.get("max")
    return torch.clamp(i[0], lo, hi)


def _batch_norm(i: list[Any], a: dict[str, Any]) -> torch.Tensor:
    x, scale, bias, mean, var = i[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, a.get("epsilon", 1e-5))


def _binary(fn: Callable[[Any, Any], Any]) -> Op:
    return lambda i, a: fn(i[0], i[1])


def _unary(fn: Callable[[Any], Any]) -> Op:
    return lambda i, a: fn(i[0])


OPS: dict[str, Op] = {
    "Identity": _unary(lambda x: x),
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _binary(torch.matmul),
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(lambda x, y: x / y if x.is_floating_point() else torch.div(x, y, rounding_mode="trunc")),
    "Pow": _binary(torch.pow),
    "Relu": _unary(F.relu),
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "Erf": _unary(torch.erf),
    "Sqrt": _unary(torch.sqrt),
    "Exp": _unary(torch.exp),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Gelu": lambda i, a: F.gelu(
        i[0], approximate="tanh" if a.get("approximate") in (b"tanh", "tanh") else "none"
    ),
    "HardSigmoid": lambda i, a: torch.clamp(a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5), 0, 1),
    "HardSwish": _unary(F.hardswish),
    "LeakyRelu": lambda i, a: F.leaky_relu(i[0], a.get("alpha", 0.01)),
    "Softmax": lambda i, a: torch.softmax(i[0], a.get("axis", -1)),
    "Clip": _clip,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": _unary(lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)),
    "GlobalMaxPool": _unary(lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True)),
    "Flatten": lambda i, a: i[0].reshape(math.prod(i[0].shape[: a.get("axis", 1)]), -1),
    "Reshape": _reshape,
    "Transpose": lambda i, a: (
        i[0].permute(*a["perm"]) if "perm" in a else i[0].permute(*reversed(range(i[0].dim())))
    ),
    "Concat": lambda i, a: torch.cat([t.to(i[0].device) for t in i], a["axis"]),
    "Shape": _shape,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "ReduceMean": _reduce_mean,
    "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
    "Slice": _slice,
}

_REFUSED = {
    "QuantizeLinear": "int8 QDQ has no int8 kernels in torch (latency would be fake-quant); use tensorrt",
    "DequantizeLinear": "int8 QDQ has no int8 kernels in torch (latency would be fake-quant); use tensorrt",
    "MatMulNBits": "int4 MatMulNBits is an onnxruntime contrib op",
}


def _topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in an order where every input exists before use (converters may append nodes)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise NotImplementedError(
                f"graph has a cycle or a dangling input near {rest[0].name or rest[0].op_type}"
            )
        for n in done:
            ready.update(n.output)
        ordered += done
        pending = rest
    return ordered


class OnnxModule(torch.nn.Module):
    """Runs an ONNX graph with torch ops. ``forward(*inputs) -> tuple of outputs``.

    Args:
        model: the ONNX model (or a path to it).
        float_dtype: None to keep the graph's own float types (fp16 segments stay fp16);
            ``torch.float16`` to run every float tensor in half precision.

    Example::

        module = OnnxModule(onnx.load("model.onnx")).eval()
        (logits,) = module(torch.randn(1, 1, 32, 32))
    """

    def __init__(self, model: onnx.ModelProto | str | Path, float_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(str(model))
        graph = model.graph
        problems = sorted(
            {
                f"{n.op_type} ({_REFUSED.get(n.op_type, 'not supported')})"
                for n in graph.node
                if n.op_type not in OPS and n.op_type != "Constant" and n.op_type != "Cast"
            }
        )
        if problems:
            raise NotImplementedError(f"torch interpreter cannot run: {', '.join(problems)}")
        self.float_dtype = float_dtype
        self._ints: dict[str, torch.Tensor] = {}  # integer constants stay on the CPU
        self._names: dict[str, str] = {}  # ONNX float constant -> buffer name
        for init in graph.initializer:
            self._constant(init.name, numpy_helper.to_array(init))
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        for node in _topological(graph):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                if "value" not in attrs:
                    raise NotImplementedError(f"Constant {node.name} without a tensor value")
                self._constant(node.output[0], numpy_helper.to_array(attrs["value"]))
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        self.input_names = [i.name for i in graph.input if i.name not in {x.name for x in graph.initializer}]
        self.output_names = [o.name for o in graph.output]

    def _constant(self, name: str, array: np.ndarray) -> None:
        t = torch.from_numpy(np.array(array, copy=True))
        if t.is_floating_point():
            buffer = f"c{len(self._names)}"
            self.register_buffer(buffer, t.to(self.float_dtype) if self.float_dtype else t, persistent=False)
            self._names[name] = buffer
        else:
            self._ints[name] = t

    def _cast(self, x: torch.Tensor, to: int) -> torch.Tensor:
        dtype = _DTYPES.get(to)
        if dtype is None:
            raise NotImplementedError(f"Cast to ONNX type {to}")
        if dtype.is_floating_point and self.float_dtype is not None:
            dtype = self.float_dtype
        return x.to(dtype)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[str, Any] = {"": None}
        env.update(self._ints)
        for onnx_name, buffer in self._names.items():
            env[onnx_name] = getattr(self, buffer)
        for name, x in zip(self.input_names, inputs, strict=True):
            env[name] = x.to(self.float_dtype) if self.float_dtype and x.is_floating_point() else x
        for op, ins, outs, attrs in self.nodes:
            args = [env[n] for n in ins]
            if op == "Cast":
                result = self._cast(args[0], attrs["to"])
            else:
                result = OPS[op](args, attrs)
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                for o, r in zip(outs, result, strict=False):
                    env[o] = r
        return tuple(env[n] for n in self.output_names)
