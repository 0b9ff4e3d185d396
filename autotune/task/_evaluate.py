"""Score: accuracy of the exact artifact that was measured, through onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil
import torch

from autotune.task._task import Task


class OrtRunner:
    """``runner(*inputs) -> first output`` over an ORT session of one ONNX file."""

    def __init__(self, model_path: Path, threads: int | None = None) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or psutil.cpu_count(logical=False) or 1
        so.log_severity_level = 3
        self.model_path = Path(model_path)
        self.session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: np.ndarray | torch.Tensor) -> np.ndarray:
        feeds = {
            name: (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(
                np.float32, copy=False
            )
            for name, x in zip(self.input_names, inputs, strict=True)
        }
        return self.session.run(None, feeds)[0]


def evaluate_artifact(task: Task, model_path: Path) -> float:
    value = float(task.evaluate(OrtRunner(model_path)))
    if not np.isfinite(value):
        raise ValueError(f"evaluate returned {value}")
    return value
