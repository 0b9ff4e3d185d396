"""A Task for a bare ONNX model (``--model model.onnx``): bit-width and runtime knobs only.

With no ``evaluate`` from the user, the score is *fidelity*: how closely the candidate's
outputs follow the original model's on synthetic inputs (top-1 agreement in percent for
logits, else 100 x (1 - relative L2 error)). It is labelled as such everywhere; for task
accuracy, wrap the model in a ``module:function`` that returns a Task with a real evaluate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from autotune._util import error_line
from autotune.errors import UserError
from autotune.evaluate import OrtRunner
from autotune.task import Runner, Task

_N_EVAL = 64  # synthetic inputs the fidelity is computed on


def _input_shapes(model: onnx.ModelProto) -> list[tuple[str, list[int]]]:
    inits = {i.name for i in model.graph.initializer}
    shapes = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        t = value.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT:
            raise UserError(
                f"input {value.name!r} is not float32: only float inputs are supported for .onnx models"
            )
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim]
        shapes.append((value.name, dims))
    return shapes


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Top-1 agreement (%) for (batch, classes) outputs, else 100 x (1 - relative L2 error)."""
    if reference.ndim == 2 and reference.shape[1] > 1:
        return float((reference.argmax(1) == candidate.argmax(1)).mean() * 100)
    err = float(np.linalg.norm(candidate - reference)) / max(float(np.linalg.norm(reference)), 1e-12)
    return float(max(0.0, 1.0 - err) * 100)


def onnx_task(path: Path, seed: int = 0) -> Task:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"--model {path}: not a valid ONNX model ({error_line(exc)})") from None
    shapes = _input_shapes(model)
    rng = np.random.default_rng(seed)
    batch1 = tuple(torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for _, s in shapes)
    # evaluation batch: dynamic batch dims take _N_EVAL rows, static ones stay as declared
    eval_inputs = []
    for value, (_, dims) in zip(
        (v for v in model.graph.input if v.name in dict(shapes)), shapes, strict=True
    ):
        first = value.type.tensor_type.shape.dim[0] if value.type.tensor_type.shape.dim else None
        dynamic = first is not None and not (first.HasField("dim_value") and first.dim_value > 0)
        eval_inputs.append(
            rng.standard_normal([_N_EVAL if dynamic else dims[0], *dims[1:]]).astype(np.float32)
        )
    reference = OrtRunner(path)(*eval_inputs)

    def evaluate(runner: Runner) -> float:
        return fidelity(reference, runner(*eval_inputs))

    calibration = [tuple(rng.standard_normal(s).astype(np.float32) for _, s in shapes) for _ in range(8)]
    return Task(
        source=path,
        example_inputs=batch1,
        evaluate=evaluate,
        calibration=calibration,
        name=path.stem,
        metric="fidelity",
    )
