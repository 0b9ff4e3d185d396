"""A Task for a bare ONNX model (``--model model.onnx``): bit-width and runtime knobs only.

With no data, the score is *fidelity*: how closely the candidate's outputs follow the original
model's on synthetic inputs (top-1 agreement in percent for logits, else 100 x (1 - relative L2
error)). It is labelled as such everywhere.

With ``--data FILE.npz`` (see :func:`load_npz`): one array per model input, named as the input,
rows along the first axis; ``labels`` (integer class per row) makes the score top-1 *accuracy*
in percent of the first output, else fidelity on those inputs. Calibration uses arrays named
``calib_<input>`` when present, else the first :data:`N_CALIBRATION` rows of the inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from autotune._util import error_line
from autotune.errors import UserError
from autotune.task._evaluate import OrtRunner
from autotune.task._task import Runner, Task

_N_EVAL = 64  # synthetic inputs the fidelity is computed on
N_CALIBRATION = 256  # rows of --data used for calibration when it has no calib_<input> arrays
_CHUNK = 256  # rows per evaluation run when the batch dimension is dynamic


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


def onnx_task(path: Path, seed: int = 0, data: Path | None = None) -> Task:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"--model {path}: not a valid ONNX model ({error_line(exc)})") from None
    shapes = _input_shapes(model)
    if data is not None:
        return _data_task(path, model, shapes, data)
    rng = np.random.default_rng(seed)
    batch1 = tuple(torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for _, s in shapes)
    # evaluation batch: dynamic batch dims take _N_EVAL rows, static ones stay as declared
    eval_inputs = []
    for value, (_, dims) in zip(
        (v for v in model.graph.input if v.name in dict(shapes)), shapes, strict=True
    ):
        eval_inputs.append(
            rng.standard_normal([_N_EVAL if _dynamic(value) else dims[0], *dims[1:]]).astype(np.float32)
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


def _dynamic(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return not dims or not (dims[0].HasField("dim_value") and dims[0].dim_value > 0)


def load_npz(data: Path, names: list[str]) -> tuple[list[np.ndarray], np.ndarray | None, list[np.ndarray]]:
    """``--data``: (inputs, labels or None, calibration inputs), checked against the model's inputs."""
    try:
        with np.load(data, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"--data {data}: not a readable .npz file ({error_line(exc)})") from None
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UserError(
            f"--data {data}: no array for model input(s) {missing}; it has {sorted(arrays)} "
            "(one array per input, named as the input; 'labels' for accuracy)"
        )
    inputs = [np.asarray(arrays[n], dtype=np.float32) for n in names]
    rows = {len(a) for a in inputs}
    labels = arrays.get("labels")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        rows.add(len(labels))
        if not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"--data {data}: 'labels' must be integer class indices, got {labels.dtype}")
    if len(rows) != 1 or 0 in rows:
        raise UserError(
            f"--data {data}: inputs and labels must have the same number of rows, got {sorted(rows)}"
        )
    if all(f"calib_{n}" in arrays for n in names):
        calibration = [np.asarray(arrays[f"calib_{n}"], dtype=np.float32) for n in names]
    else:
        calibration = [a[:N_CALIBRATION] for a in inputs]
    return inputs, labels, calibration


def _data_task(path: Path, model: onnx.ModelProto, shapes: list[tuple[str, list[int]]], data: Path) -> Task:
    names = [n for n, _ in shapes]
    inputs, labels, calib = load_npz(data, names)
    values = [v for v in model.graph.input if v.name in dict(shapes)]
    # the deployment batch: the model's static first dimension, else 1; a static one fixes the chunk
    static = [dims[0] for v, (_, dims) in zip(values, shapes, strict=True) if not _dynamic(v)]
    batch = static[0] if static else 1
    chunk = batch if static else _CHUNK

    def chunks(arrays: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
        n = len(arrays[0]) - len(arrays[0]) % chunk if static else len(arrays[0])
        return [tuple(a[i : i + chunk] for a in arrays) for i in range(0, n, chunk)]

    batches = chunks(inputs)
    if not batches:
        raise UserError(f"--data {data}: fewer rows than the model's batch size {batch}")

    def outputs(runner: Runner) -> np.ndarray:
        return np.concatenate([runner(*b) for b in batches])

    if labels is not None:
        kept = labels[: sum(len(b[0]) for b in batches)]

        def evaluate(runner: Runner) -> float:
            out = outputs(runner)
            if out.ndim != 2:
                raise ValueError(f"labels need a (batch, classes) first output, got shape {out.shape}")
            return float((out.argmax(1) == kept).mean() * 100)

    else:
        reference = outputs(OrtRunner(path))

        def evaluate(runner: Runner) -> float:
            return fidelity(reference, outputs(runner))

    return Task(
        source=path,
        example_inputs=tuple(torch.from_numpy(a[:batch].copy()) for a in inputs),
        evaluate=evaluate,
        calibration=chunks(calib) or [tuple(a[:batch] for a in calib)],
        name=path.stem,
        metric="accuracy" if labels is not None else "fidelity",
    )
