"""Task: what autotune needs to know about a model to compress it honestly.

A task bundles the model with the data that judges it. ``evaluate`` never sees the torch
model: it receives a ``runner`` that executes the exact ONNX artifact whose latency was
measured, so the accuracy reported is the accuracy of what ships.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch


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
        source: what to compress: the FP32 torch model (put in eval mode by autotune), or the
            path of an ONNX file (then only bit-width and runtime knobs are searched).
        example_inputs: one batch at the deployment batch size; latency is measured on it.
        evaluate: ``evaluate(runner) -> float``, higher is better (accuracy in percent, say).
        calibration: input batches for static int8 quantization (tuples of arrays).
        finetune: optional recovery training applied to pruned/sparse candidates.
        name: shown in reports.
        metric: what ``evaluate`` returns, shown in reports ("accuracy", "fidelity", ...).
    """

    source: torch.nn.Module | Path
    example_inputs: tuple[torch.Tensor, ...]
    evaluate: Evaluate
    calibration: Sequence[tuple[np.ndarray, ...]] = field(default_factory=list)
    finetune: Finetune | None = None
    name: str = "model"
    metric: str = "accuracy"
    #: unlabeled input batches for built-in recovery (BatchNorm re-estimation, distillation);
    #: None: the calibration batches
    recovery_data: Sequence[tuple[np.ndarray, ...]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.source, str):
            self.source = Path(self.source)
        if isinstance(self.example_inputs, torch.Tensor):
            self.example_inputs = (self.example_inputs,)
        self.example_inputs = tuple(self.example_inputs)
        if not self.calibration:
            self.calibration = [tuple(t.detach().cpu().numpy() for t in self.example_inputs)]
        self.calibration = [
            tuple(np.asarray(a) for a in (b if isinstance(b, (tuple, list)) else (b,)))
            for b in self.calibration
        ]

    @property
    def model(self) -> torch.nn.Module:
        """The torch model; only a torch task has one (check ``isinstance(task.source, Path)``)."""
        if isinstance(self.source, Path):
            raise TypeError(f"task {self.name!r} wraps the ONNX file {self.source}, not a torch model")
        return self.source
