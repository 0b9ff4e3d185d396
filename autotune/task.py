"""Task: what autotune needs to know about a model to compress it honestly.

A task bundles the model with the data that judges it. ``evaluate`` never sees the torch
model: it receives a ``runner`` that executes the exact ONNX artifact whose latency was
measured, so the accuracy reported is the accuracy of what ships.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from autotune.errors import UserError


class Runner(Protocol):
    """Runs a batch through a candidate artifact: ``runner(x) -> first output`` (numpy).

    Inputs may be numpy arrays or torch tensors, with any batch size.
    """

    def __call__(self, *inputs: np.ndarray | torch.Tensor) -> np.ndarray: ...


Evaluate = Callable[[Runner], float]
#: ``finetune(student, teacher)`` trains ``student`` in place, e.g. by knowledge distillation
#: from ``teacher`` (the unmodified model). Called after pruning, before export.
Finetune = Callable[[torch.nn.Module, torch.nn.Module], None]


@dataclass
class Task:
    """A model plus how to judge it.

    Args:
        model: the FP32 model to compress (put in eval mode by autotune); None for an ONNX task.
        example_inputs: one batch at the deployment batch size; latency is measured on it.
        evaluate: ``evaluate(runner) -> float``, higher is better (accuracy in percent, say).
        calibration: input batches for static int8 quantization (tuples of arrays).
        finetune: optional recovery training applied to pruned/sparse candidates.
        name: shown in reports.
        metric: what ``evaluate`` returns, shown in reports ("accuracy", "fidelity", ...).
    """

    model: torch.nn.Module | None
    example_inputs: tuple[torch.Tensor, ...]
    evaluate: Evaluate
    calibration: Sequence[tuple[np.ndarray, ...]] = field(default_factory=list)
    finetune: Finetune | None = None
    name: str = "model"
    metric: str = "accuracy"
    onnx_path: Path | None = None  # set when the task wraps an ONNX file (no torch knobs)
    #: unlabeled input batches for built-in recovery (BatchNorm re-estimation, distillation);
    #: None: the calibration batches
    recovery_data: Sequence[tuple[np.ndarray, ...]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.example_inputs, torch.Tensor):
            self.example_inputs = (self.example_inputs,)
        self.example_inputs = tuple(self.example_inputs)
        if not self.calibration:
            self.calibration = [tuple(t.detach().cpu().numpy() for t in self.example_inputs)]
        self.calibration = [
            tuple(np.asarray(a) for a in (b if isinstance(b, (tuple, list)) else (b,)))
            for b in self.calibration
        ]


def load_task(spec: str | None) -> Task:
    """Resolve ``--model``: None (built-in demo), ``module:function`` or ``path.onnx``."""
    if spec is None:
        from autotune.demo import demo_task

        return demo_task()
    if spec.endswith(".onnx"):
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"--model {spec}: no such ONNX file")
        from autotune.onnx_task import onnx_task

        return onnx_task(path)
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise UserError(
            f"--model {spec!r}: expected 'package.module:function' returning a Task, or a .onnx file"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"--model {spec}: cannot import module {module_name!r} ({exc})") from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise UserError(f"--model {spec}: module {module_name!r} has no function {func_name!r}")
    task = factory()
    if not isinstance(task, Task):
        raise UserError(f"--model {spec}: {func_name}() returned {type(task).__name__}, not a Task")
    return task
