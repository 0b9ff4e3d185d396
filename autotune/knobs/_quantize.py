"""ONNX-side knob: per-layer bit-width, quantized the way the candidate's recipe says.

* 8 bit: static quantization through onnxruntime.quantization, as the :class:`~autotune.knobs._recipe.Recipe`
  says (by default QDQ, per channel, u8 activations, s8 weights, MinMax); the layers kept at
  higher precision are passed as ``nodes_to_exclude``; calibration ranges are cached;
* 4 bit: weight-only MatMulNBits (MatMul nodes only), ``accuracy_level=4`` for the fast kernel;
* 16 bit: fp16 (GPU backends), via onnxruntime's float16 converter with a node block list.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from onnxruntime.quantization.shape_inference import quant_pre_process

from autotune._memory import headroom
from autotune.inputs import InputSpec, feeds, graph_inputs
from autotune.knobs._masks import mask_path
from autotune.knobs._recipe import FUSIONS_KEY, Recipe, calibration_cache, publish
from autotune.task import weighted_nodes

INT4_BLOCK_SIZE = 32
_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


def optimize_transformer(src: Path, dst: Path) -> dict[str, int]:
    """onnxruntime's transformer fusions (python fusions only: node names are kept where they
    survive); returns the fused operator counts, also written into the model's metadata."""
    from onnxruntime.transformers.optimizer import optimize_model

    with logger_level("onnxruntime.transformers", logging.ERROR):
        optimized = optimize_model(str(src), model_type="bert", opt_level=0)
    fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    meta = optimized.model.metadata_props.add()
    meta.key, meta.value = FUSIONS_KEY, json.dumps(fused, sort_keys=True)
    optimized.save_model_to_file(str(dst), use_external_data_format=False)
    return fused


@contextlib.contextmanager
def logger_level(name: str, level: int) -> Iterator[None]:
    """Set the named logger's level for the block only, then restore it."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


#: a calibration batch: arrays in the order of the graph's inputs, or by input name
CalibrationBatch = tuple[np.ndarray, ...] | Mapping[str, np.ndarray]


def _feeds(specs: list[InputSpec], batch: CalibrationBatch) -> dict[str, np.ndarray]:
    if isinstance(batch, Mapping):  # by name: a name the graph lacks (dropped as unused) is skipped
        return feeds(specs, named=batch, names=list(batch))
    return feeds(specs, batch)


class _Batches(CalibrationDataReader):
    """The calibration batches as feeds of the graph's inputs, each in the input's own dtype
    (int64 token ids stay integers; only float inputs get float data).

    A batch of more than ``rows`` samples is fed in slices (views, no copies) along a dynamic
    batch axis. ``len`` and ``set_range`` let ``quantize_static`` collect one feed at a time
    (``CalibStridedMinMax``): every calibrator then keeps one feed's activations, never all of
    them (the histogram calibrators hold every output of every feed until they histogram them).
    """

    def __init__(
        self, specs: list[InputSpec], batches: Sequence[CalibrationBatch], rows: int | None = None
    ) -> None:
        dynamic = all(s.batch_dynamic for s in specs)
        self._all = [part for b in batches for part in _split(_feeds(specs, b), rows if dynamic else None)]
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self._all[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def first(self) -> dict[str, np.ndarray]:
        return self._all[0]


def _split(feed: dict[str, np.ndarray], rows: int | None) -> list[dict[str, np.ndarray]]:
    """``feed`` in slices of at most ``rows`` samples when every input has the same leading size."""
    sizes = {a.shape[0] if a.ndim else None for a in feed.values()}
    n = next(iter(sizes)) if len(sizes) == 1 else None
    if rows is None or n is None or n <= rows:
        return [feed]
    return [{k: a[i : i + rows] for k, a in feed.items()} for i in range(0, n, rows)]


#: of the memory left under the search's budget, the share one calibration feed's activations
#: may take: the histogram calibrators copy a tensor two or three times while binning it
CALIBRATION_SHARE = 0.25


def calibration_rows(model: onnx.ModelProto) -> int | None:
    """Samples per calibration feed that fit the search's memory budget, from the bytes one sample
    needs for every activation the shape-inferred graph holds (None: no budget, no slicing)."""
    left = headroom()
    if left is None:
        return None
    per_sample = 0
    for vi in [*model.graph.value_info, *model.graph.output]:
        t = vi.type.tensor_type
        if not t.HasField("shape") or t.elem_type not in _ITEMSIZE:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        per_sample += int(np.prod(dims or [1])) * _ITEMSIZE[t.elem_type]
    return max(1, int(left * CALIBRATION_SHARE) // max(per_sample, 1))


_ITEMSIZE = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.DOUBLE: 8}


def quantize_model(
    src: Path,
    dst: Path,
    bits: dict[str, int],
    calibration: Sequence[CalibrationBatch],
    recipe: Recipe | None = None,
) -> None:
    """Write ``src`` quantized per node (``bits``: ONNX node name -> 32/16/8/4) to ``dst``.

    ``calibration``: batches as tuples in the order of the graph's inputs, or dicts by name (a
    name the graph lacks is skipped: the exporter drops inputs the model never reads).
    """
    recipe = recipe or Recipe()
    fused: dict[str, int] | None = None

    # the quantizers chat on the root logger (which MatMulNBits' import sets to INFO): quiet it here only
    with tempfile.TemporaryDirectory() as tmp, logger_level("root", logging.ERROR):
        current = src
        if recipe.optimizer == "transformer":
            current = Path(tmp) / "fused.onnx"
            fused = optimize_transformer(src, current)
        model = onnx.load(str(current))
        all_nodes = [n.name for n in weighted_nodes(model)]
        int8 = [n for n in all_nodes if bits.get(n, 32) == 8]
        int4 = [n for n in all_nodes if bits.get(n, 32) == 4]
        fp16 = [n for n in all_nodes if bits.get(n, 32) == 16]
        if int8:
            excluded = [n for n in all_nodes if n not in int8]
            current = _int8(current, Path(tmp), int8, excluded, calibration, recipe)
        if int4:
            graph = onnx.load(str(current))
            # nodes_to_include only *adds* to the MatMul op type; excluding is what restricts
            others = [n.name for n in graph.graph.node if n.name not in int4]
            quantizer = MatMulNBitsQuantizer(
                graph,
                bits=4,
                block_size=INT4_BLOCK_SIZE,
                is_symmetric=True,
                accuracy_level=4,
                nodes_to_exclude=others,
            )
            quantizer.process()
            out = Path(tmp) / "int4.onnx"
            quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
            current = out
        if fp16:
            from onnxruntime.transformers.float16 import convert_float_to_float16
            from onnxruntime.transformers.onnx_model import OnnxModel

            m = onnx.load(str(current))
            stay = _fp32_nodes(m, set(fp16))
            m = convert_float_to_float16(m, keep_io_types=True, node_block_list=stay)
            _drop_round_trips(m, set(stay))
            fp16_model = OnnxModel(m)
            fp16_model.topological_sort()  # the converter appends its Casts after their consumers
            out = Path(tmp) / "fp16.onnx"
            onnx.save(fp16_model.model, str(out))
            current = out
        if fused is not None and current != src:
            _record(current, fused)  # the quantizers drop metadata: carry the fusions over
        dst.write_bytes(Path(current).read_bytes())


def _fp32_nodes(model: onnx.ModelProto, fp16: set[str]) -> list[str]:
    """Nodes that stay float: weighted layers not at 16 bits, and the ops they feed.

    An unweighted op (ReLU, Add, pooling) runs in fp16 when every tensor it reads comes from fp16
    work, so a run of fp16 layers pays two Casts at its edges instead of two around every op.
    """
    weighted = {n.name for n in weighted_nodes(model)}
    constant = {t.name for t in model.graph.initializer}
    half: set[str] = set()  # tensors produced in fp16
    stay = []
    for node in model.graph.node:  # exported graphs are topologically sorted
        produced = [t for t in node.input if t and t not in constant]
        if not produced and node.name not in weighted:  # Constant, Identity of a weight: a weight
            constant.update(node.output)
            stay.append(node.name)  # kept as they are: folded away when the session loads
            continue
        if node.name in weighted:
            is_half = node.name in fp16
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):  # int8 layers read fp32 scales
            is_half = False
        else:
            is_half = all(t in half for t in produced)
        if is_half:
            half.update(node.output)
        else:
            stay.append(node.name)
    return stay


def _drop_round_trips(model: onnx.ModelProto, fp32_nodes: set[str]) -> None:
    """Remove the converter's fp32 -> fp16 -> fp32 Cast pairs between two float nodes.

    The converter casts every kept node's output to fp16 and back; the pair would round a float
    layer's activations to fp16 and cost two kernels, so its consumers read the fp32 tensor.
    """
    graph = model.graph
    fp32 = {i.name for i in graph.input}
    fp32.update(o for n in graph.node if n.name in fp32_nodes for o in n.output)
    to = {
        n.output[0]: (n, next(a.i for a in n.attribute if a.name == "to"))
        for n in graph.node
        if n.op_type == "Cast"
    }
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    for node in graph.node:
        for i, name in enumerate(node.input):
            outer = to.get(name)
            inner = to.get(outer[0].input[0]) if outer and outer[1] == single else None
            if inner and inner[1] == half and inner[0].input[0] in fp32:
                node.input[i] = inner[0].input[0]
    used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    while dead := [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in used]:
        for n in dead:
            graph.node.remove(n)
        used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}


def _record(path: Path, fused: dict[str, int]) -> None:
    model = onnx.load(str(path))
    if not any(p.key == FUSIONS_KEY for p in model.metadata_props):
        meta = model.metadata_props.add()
        meta.key, meta.value = FUSIONS_KEY, json.dumps(fused, sort_keys=True)
        onnx.save(model, str(path))


def _int8(
    src: Path,
    tmp: Path,
    int8: list[str],
    excluded: list[str],
    calibration: Sequence[CalibrationBatch],
    recipe: Recipe,
) -> Path:
    """Static int8 quantization of the ``int8`` nodes as ``recipe`` says; calibration is cached."""
    prepared = tmp / "prepared.onnx"
    if recipe.preprocess == "optimize":
        # ORT's full pre-processing (symbolic shapes, graph optimisation): a node it makes
        # (fused, renamed) is not one the search mapped, so it stays fp32 unless every layer is int8
        quant_pre_process(str(src), str(prepared))
        if excluded:
            before = {n.name for n in onnx.load(str(src), load_external_data=False).graph.node}
            after = {n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node}
            excluded = excluded + sorted(after - before)
    else:
        # shape inference only: ORT graph optimisation here would rename the nodes we map; the
        # fused contrib ops (Attention, SkipLayerNormalization) need ORT's symbolic shape inference
        symbolic = recipe.optimizer == "transformer"
        quant_pre_process(str(src), str(prepared), skip_optimization=True, skip_symbolic_shape=not symbolic)
    prepared_model = onnx.load(str(prepared), load_external_data=False)
    specs, rows = graph_inputs(prepared_model), calibration_rows(prepared_model)
    cache = calibration_cache(prepared, recipe.calibration, calibration)
    scratch = cache.with_suffix(f".tmp{os.getpid()}")
    out = tmp / "int8.onnx"
    batches = _Batches(specs, calibration, rows)
    masked, finite = mask_path(prepared, prepared_model, batches.first(), tmp) if len(batches) else ([], None)
    del prepared_model
    excluded = excluded + [n for n in masked if n not in excluded]
    # the histogram calibrators print their progress: keep the CLI's output clean
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if finite is not None and not cache.is_file():  # ranges from the finite copy first
                _quantize_static(finite, tmp / "calibrated.onnx", batches, excluded, recipe, scratch)
            _quantize_static(prepared, out, batches, excluded, recipe, cache if cache.is_file() else scratch)
    finally:
        publish(scratch, cache)
    return out


def _quantize_static(
    prepared: Path,
    out: Path,
    batches: _Batches,
    excluded: list[str],
    recipe: Recipe,
    cache: Path,
) -> None:
    """``quantize_static`` with the recipe's options; ranges from ``cache`` when it is a file,
    else calibrated and written there."""
    quantize_static(
        str(prepared),
        str(out),
        batches,
        quant_format=QuantFormat.QDQ if recipe.format == "qdq" else QuantFormat.QOperator,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        activation_type=QuantType.QUInt8 if recipe.activation == "u8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibrate_method=_METHODS[recipe.calibration],
        # one feed collected at a time (see _Batches); MinMax merges ranges exactly, the
        # histogram calibrators merge their histograms feed by feed
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "CalibStridedMinMax": 1},
        calibration_cache_path=cache,
    )
