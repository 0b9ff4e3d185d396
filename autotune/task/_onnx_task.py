"""A Task for a bare ONNX model (``--model model.onnx``): bit-width and runtime knobs only.

With no data, the score is *fidelity*: how closely the candidate's outputs follow the original
model's on synthetic inputs (top-1 agreement in percent for logits, else 100 x (1 - relative L2
error)). It is labelled as such everywhere.

Inputs are read off the graph: names, dtypes (float images, int64 token ids, masks ...) and
shapes. Synthetic inputs follow them: floats are standard normal, ids stay below the embedding
table they index, masks are ones.

With ``--data FILE.npz`` (see :func:`load_npz`): one array per model input, named as the input,
rows along the first axis, of the input's kind (integer arrays for integer inputs); ``labels``
(integer class per row) makes the score top-1 *accuracy* in percent of the first output, else
fidelity on those inputs. Calibration uses arrays named ``calib_<input>`` when present, else the
first :data:`N_CALIBRATION` rows of the inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from autotune._util import error_line
from autotune.errors import UserError
from autotune.inputs import InputError, InputSpec, conform, graph_inputs, synthetic
from autotune.task._evaluate import OrtRunner
from autotune.task._task import Runner, Task

_N_EVAL = 64  # synthetic inputs the fidelity is computed on
N_CALIBRATION = 256  # rows of --data used for calibration when it has no calib_<input> arrays
_CHUNK = 256  # rows per evaluation run when the batch dimension is dynamic


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
    specs = graph_inputs(model)
    unsupported = [s for s in specs if s.dtype.kind not in "biuf"]
    if unsupported:
        raise UserError(
            f"--model {path}: input {unsupported[0].name!r} is {unsupported[0]}: only numeric inputs"
        )
    if data is not None:
        return _data_task(path, specs, data)
    rng = np.random.default_rng(seed)

    def synth(batch: int) -> dict[str, np.ndarray]:
        # the graph's dtypes and ranges: ids below the embedding table's size, masks of ones
        return {s.name: synthetic(s, s.shape(batch), rng, model) for s in specs}

    batch1 = synth(1)
    # evaluation batch: dynamic batch dims take _N_EVAL rows, static ones stay as declared
    eval_inputs = synth(_N_EVAL)
    reference = OrtRunner(path)(eval_inputs)

    def evaluate(runner: Runner) -> float:
        return fidelity(reference, runner(eval_inputs))

    calibration = [synth(1) for _ in range(8)]
    return Task(
        source=path,
        example_inputs={n: torch.from_numpy(a) for n, a in batch1.items()},
        evaluate=evaluate,
        calibration=calibration,  # type: ignore[arg-type]  # by name: Task orders them
        name=path.stem,
        metric="fidelity",
    )


def load_npz(
    data: Path, specs: list[InputSpec]
) -> tuple[list[np.ndarray], np.ndarray | None, list[np.ndarray]]:
    """``--data``: (inputs, labels or None, calibration inputs), checked against the model's inputs.

    Each array must be numeric, of the input's rank, with its static dims after the first (the
    rows); integer inputs take integer arrays. It comes back in the input's dtype. Anything else
    is a UserError of one line naming the array, its dtype and shape, and the model's input.
    """
    try:
        with np.load(data, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"--data {data}: not a readable .npz file ({error_line(exc)})") from None
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UserError(
            f"--data {data}: no array for model input(s) {missing}; it has {sorted(arrays)} "
            f"(one array per input, named as the input: {', '.join(f'{s.name} {s}' for s in specs)}; "
            "'labels' for accuracy)"
        )

    def checked(key: str, spec: InputSpec) -> np.ndarray:
        try:
            return conform(arrays[key], spec, f"--data {data}: array {key!r}", check_shape=True)
        except InputError as exc:
            raise UserError(str(exc)) from None

    inputs = [checked(s.name, s) for s in specs]
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
        calibration = [checked(f"calib_{s.name}", s) for s in specs]
    else:
        calibration = [a[:N_CALIBRATION] for a in inputs]
    return inputs, labels, calibration


def _data_task(path: Path, specs: list[InputSpec], data: Path) -> Task:
    names = [s.name for s in specs]
    inputs, labels, calib = load_npz(data, specs)
    # the deployment batch: the model's static first dimension, else 1; a static one fixes the chunk
    static = [d for s in specs if s.dims and (d := s.dims[0]) is not None]
    batch = static[0] if static else 1
    chunk = batch if static else _CHUNK

    def chunks(arrays: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        n = len(arrays[0]) - len(arrays[0]) % chunk if static else len(arrays[0])
        return [{k: a[i : i + chunk] for k, a in zip(names, arrays, strict=True)} for i in range(0, n, chunk)]

    batches = chunks(inputs)
    if not batches:
        raise UserError(f"--data {data}: fewer rows than the model's batch size {batch}")

    def outputs(runner: Runner) -> np.ndarray:
        return np.concatenate([runner(b) for b in batches])

    if labels is not None:
        kept = labels[: sum(len(b[names[0]]) for b in batches)]

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
        example_inputs={n: torch.from_numpy(a[:batch].copy()) for n, a in zip(names, inputs, strict=True)},
        evaluate=evaluate,
        calibration=chunks(calib) or [{n: a[:batch] for n, a in zip(names, calib, strict=True)}],  # type: ignore[arg-type]
        name=path.stem,
        metric="accuracy" if labels is not None else "fidelity",
    )
