"""Attention-mask sentinels: the float constants (``-inf``, ``finfo.min``, ``-1e9``) a transformer
adds to its attention scores where the mask is 0, before a Softmax.

No int8 scale covers a range of ``[-inf, x]``, and the histogram calibrators (entropy,
percentile) cannot bin one: onnxruntime's quantizer would either fail or turn the scores into
zeros. So the nodes that make or read such values stay float, and the calibrators run on a copy
whose sentinels read ``+-1e3``: the Softmax after it gives the same probabilities
(``exp(-1e3)`` is 0 in float32), and every range is finite.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

#: a float constant this large (or not finite) is a mask sentinel, not a weight
SENTINEL = 1e30
#: what a sentinel reads in the calibration copy: small enough that numpy can still cut a
#: constant tensor of it into 2048 float32 histogram bins (the percentile calibrator does)
FINITE = 1e3


def mask_path(
    prepared: Path, graph: onnx.ModelProto, feed: Mapping[str, np.ndarray], scratch: Path
) -> tuple[list[str], Path | None]:
    """The nodes that make or read sentinel values on ``feed`` (to keep float) and a copy of
    ``prepared`` with finite sentinels for the calibrators; ``([], None)`` for a graph with none.
    ``graph``: ``prepared`` as already loaded (external data left out): a graph with no sentinel
    constant, every CNN, costs one pass over its constants and nothing more."""
    if all(_clamped(t) is None for t in _constants(graph)):
        return [], None
    model = onnx.load(str(prepared))
    carrying = _sentinel_tensors(model, feed)
    for t in _constants(model):
        if (new := _clamped(t)) is not None:
            t.CopyFrom(new)  # in place: the tensor is the graph's own
    finite = scratch / "calibration.onnx"
    onnx.save(model, str(finite))
    nodes = [
        n.name for n in model.graph.node if carrying & set(n.output) or carrying & set(n.input)
    ]  # fmt: skip
    return nodes, finite


def _constants(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Float initializers and Constant values held in the graph (external data: weights)."""
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    tensors = [*model.graph.initializer]
    tensors += [
        a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    ]
    for t in tensors:
        if t.data_type in floats and t.data_location != onnx.TensorProto.EXTERNAL:
            yield t


def _clamped(t: onnx.TensorProto) -> onnx.TensorProto | None:
    """``t`` with its sentinels at ``+-FINITE``; None when it holds none."""
    a = numpy_helper.to_array(t)
    big = ~np.isfinite(a) | (np.abs(a) >= SENTINEL)
    if not big.any() or np.isnan(a).any():
        return None
    return numpy_helper.from_array(np.where(big, np.sign(a) * FINITE, a).astype(a.dtype), t.name)


def _sentinel_tensors(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> set[str]:
    """Float tensors holding a value that is not finite or at least ``SENTINEL`` on ``feed``."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)  # every tensor becomes an output of the probe only
    graph = probe.graph
    have = {o.name for o in graph.output}
    made = {o for n in graph.node for o in n.output}  # value_info may still name folded constants
    floats = [
        vi.name for vi in graph.value_info
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and vi.name in made - have
    ]  # fmt: skip
    graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in floats)
    names = [o.name for o in graph.output]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # see every tensor
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    values = session.run(names, {k: v for k, v in feed.items() if k in wanted})
    out = set()
    for name, value in zip(names, values, strict=True):
        a = np.asarray(value)
        if a.dtype.kind == "f" and a.size and (~np.isfinite(a) | (np.abs(a) >= SENTINEL)).any():
            out.add(name)
    return out
