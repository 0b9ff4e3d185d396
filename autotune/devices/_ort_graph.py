"""The graph onnxruntime's CPU provider really runs, and the precision of each weighted layer in it.

onnxruntime's optimiser rewrites an artifact when the session loads: it fuses QDQ node pairs into
int8 kernels (QLinearConv, QGemm, ...), and it does so also around a layer left in float when
both of its neighbours are int8 (the quantizer puts a DequantizeLinear before it and a
QuantizeLinear after it for them): such a layer runs in int8 although the candidate says fp32.
Conversely, an int8 layer whose QDQ pair the optimiser does not fuse (graph optimisation off, or a
pairing its kernels lack) runs in float between a DequantizeLinear and a QuantizeLinear. Both the
latency predictor (study/_onnx_stats.py) and the builder's record of what each layer runs in
(build/_precision.py) read the optimised graph through this module.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import onnx

from autotune.devices._base import RuntimeOptions

#: kernels that run a weighted node in int8 once onnxruntime has fused its Q/DQ pairs
#: (MatMulNBits: 4-bit weights, int8 compute with ``accuracy_level=4``)
INT8_KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger", "MatMulNBits")
#: what the optimiser or the quantizer appends to the name of the node it replaces
_SUFFIX = re.compile(r"(_token_\d+|_quant|_Q\d+)+$")


def optimized_graph(onnx_path: Path, runtime: RuntimeOptions | None = None) -> onnx.GraphProto:
    """The graph onnxruntime's CPU provider runs, after its optimiser (fusions, layouts), with
    the session options the candidate is measured with."""
    import onnxruntime as ort

    from autotune.devices._ort import session_options

    options = session_options(runtime or RuntimeOptions())
    fd, out = tempfile.mkstemp(suffix=".onnx", prefix="autotune-optimized-")
    os.close(fd)
    try:
        options.optimized_model_filepath = out
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        return onnx.load(out, load_external_data=False).graph
    finally:
        os.unlink(out)


def source_name(node: onnx.NodeProto) -> str:
    """The name of the artifact's node an optimised node stands for (``/conv1/Conv_token_6``
    and ``/fc/MatMul_Q4`` stand for ``/conv1/Conv`` and ``/fc/MatMul``)."""
    return _SUFFIX.sub("", node.name)


def quantized_kernels(graph: onnx.GraphProto) -> dict[str, str]:
    """Artifact node name -> ``int8`` or ``int4``, for each weighted node the optimised graph runs
    on a quantized kernel; every other weighted node runs in float."""
    out: dict[str, str] = {}
    for node in graph.node:
        if node.op_type in INT8_KERNELS:
            out[source_name(node)] = "int4" if node.op_type == "MatMulNBits" else "int8"
    return out


def _fp16_nodes(model: onnx.ModelProto) -> set[str]:
    """Weighted nodes whose weight the artifact holds in fp16 (the fp16 pass converts them)."""
    half = onnx.TensorProto.FLOAT16
    weights = {i.name for i in model.graph.initializer if i.data_type == half}
    return {n.name for n in model.graph.node if len(n.input) > 1 and n.input[1] in weights}


def runs_in(onnx_path: Path, nodes: dict[str, str], runtime: RuntimeOptions | None = None) -> dict[str, str]:
    """``layer -> precision`` (``int8``, ``int4``, ``fp16``, ``fp32``: the bit-width knob's
    labels) as onnxruntime's CPU provider runs ``onnx_path``; ``nodes``: layer -> its node name."""
    quantized = quantized_kernels(optimized_graph(onnx_path, runtime))
    half = _fp16_nodes(onnx.load(str(onnx_path), load_external_data=False))
    return {
        layer: quantized.get(node) or ("fp16" if node in half else "fp32") for layer, node in nodes.items()
    }
