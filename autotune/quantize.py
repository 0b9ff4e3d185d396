"""ONNX-side knob: per-layer bit-width.

* 8 bit: static QDQ through onnxruntime.quantization, per channel; the layers kept at higher
  precision are passed as ``nodes_to_exclude``;
* 4 bit: weight-only MatMulNBits (MatMul nodes only), ``accuracy_level=4`` for the fast kernel;
* 16 bit: fp16 (GPU backends), via onnxruntime's float16 converter with a node block list.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from onnxruntime.quantization.shape_inference import quant_pre_process

from autotune.onnx_export import weighted_nodes

INT4_BLOCK_SIZE = 32


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


class _Batches(CalibrationDataReader):
    def __init__(self, names: list[str], batches: Sequence[tuple[np.ndarray, ...]]) -> None:
        self._iter: Iterator[dict[str, np.ndarray]] = iter(
            [dict(zip(names, (np.asarray(a, dtype=np.float32) for a in b), strict=True)) for b in batches]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def quantize_model(
    src: Path,
    dst: Path,
    bits: dict[str, int],
    calibration: Sequence[tuple[np.ndarray, ...]],
) -> None:
    """Write ``src`` quantized per node (``bits``: ONNX node name -> 32/16/8/4) to ``dst``."""
    model = onnx.load(str(src))
    all_nodes = [n.name for n in weighted_nodes(model)]
    int8 = [n for n in all_nodes if bits.get(n, 32) == 8]
    int4 = [n for n in all_nodes if bits.get(n, 32) == 4]
    fp16 = [n for n in all_nodes if bits.get(n, 32) == 16]
    names = [i.name for i in model.graph.input]

    # the quantizers chat on the root logger (which MatMulNBits' import sets to INFO): quiet it here only
    with tempfile.TemporaryDirectory() as tmp, logger_level("root", logging.ERROR):
        current = src
        if int8:
            prepared = Path(tmp) / "prepared.onnx"
            # shape inference only: ORT graph optimisation here would rename the nodes we map
            quant_pre_process(str(current), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
            out = Path(tmp) / "int8.onnx"
            quantize_static(
                str(prepared),
                str(out),
                _Batches(names, calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=[n for n in all_nodes if n not in int8],
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
            current = out
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

            m = onnx.load(str(current))
            keep = [n.name for n in m.graph.node if n.name not in fp16]
            m = convert_float_to_float16(m, keep_io_types=True, node_block_list=keep)
            out = Path(tmp) / "fp16.onnx"
            onnx.save(m, str(out))
            current = out
        dst.write_bytes(Path(current).read_bytes())
