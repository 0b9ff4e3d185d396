"""The canary: a tiny fixed ONNX model whose latency tells whether the device has drifted.

Two 512x512 MatMul+Relu layers on a 32x512 input (about 17 M multiply-adds, half a millisecond
on one CPU core; 2 MiB of weights, so it feels the caches and memory like the models it
watches), cheap enough to re-measure every few jobs. Built in-process with ``onnx.helper``;
the bytes are deterministic, so a remote agent receives it once (content-addressed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CANARY_VERSION = 1
CANARY_INPUT = "x"
_ROWS, _DIM, _LAYERS = 32, 512, 2


def canary_proto() -> onnx.ModelProto:
    rng = np.random.default_rng(20240611)
    nodes, inits = [], []
    prev = CANARY_INPUT
    for i in range(_LAYERS):
        w = (rng.standard_normal((_DIM, _DIM)) / np.sqrt(_DIM)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
        out = "y" if i == _LAYERS - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"m{i}"], [out], name=f"relu{i}"))
        prev = out
    graph = helper.make_graph(
        nodes,
        "autotune_canary",
        [helper.make_tensor_value_info(CANARY_INPUT, TensorProto.FLOAT, [_ROWS, _DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [_ROWS, _DIM])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="autotune")
    model.ir_version = 8  # readable by every onnxruntime the project supports
    onnx.checker.check_model(model)
    return model


def canary_inputs() -> dict[str, np.ndarray]:
    return {CANARY_INPUT: np.random.default_rng(7).standard_normal((_ROWS, _DIM)).astype(np.float32)}


def write_canary(directory: Path) -> Path:
    """Write the canary model into ``directory`` (once) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"canary-v{CANARY_VERSION}.onnx"
    if not path.is_file():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        onnx.save(canary_proto(), str(tmp))
        os.replace(tmp, path)
    return path
