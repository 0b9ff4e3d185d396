"""Score: accuracy of the exact artifact that was measured, through onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psutil

from autotune.inputs import feeds, session_inputs
from autotune.task._task import Task


class OrtRunner:
    """``runner(*inputs, **named) -> first output`` over an ORT session of one ONNX file.

    Positional inputs take ``names`` in order (a task's input names; default: the session's own);
    named ones, or one dict, go by name. Each is cast to its graph input's dtype, so float64 data
    feeds a float32 model and int32 ids an int64 one; float data for an integer input is refused.
    """

    def __init__(
        self, model_path: Path, threads: int | None = None, names: Sequence[str] | None = None
    ) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or psutil.cpu_count(logical=False) or 1
        so.log_severity_level = 3
        self.model_path = Path(model_path)
        self.session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        self.specs = session_inputs(self.session)
        self.input_names = [s.name for s in self.specs]
        self.names = list(names) if names is not None else self.input_names

    def __call__(self, *inputs: Any, **named: Any) -> np.ndarray:
        if len(inputs) == 1 and isinstance(inputs[0], Mapping) and not named:
            named = dict(inputs[0])  # runner(batch): a tokenizer's dict, say
            inputs = ()
        return self.session.run(None, feeds(self.specs, inputs, named, self.names))[0]


def evaluate_artifact(task: Task, model_path: Path) -> float:
    value = float(task.evaluate(OrtRunner(model_path, names=task.input_names)))
    if not np.isfinite(value):
        raise ValueError(f"evaluate returned {value}")
    return value
