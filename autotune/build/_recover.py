"""Built-in recovery for pruned candidates, so pruning is usable without training code.

* BatchNorm statistics re-estimated on unlabeled inputs after width or sparsity changed the
  activations (cheap: forward passes only). Always on for pruned candidates.
* Knowledge distillation from the unmodified model (soft targets, no labels), a bounded number
  of steps, with ``--recover kd``.

Data: ``Task.recovery_data``, defaulting to the calibration batches. A task's own ``finetune``
takes precedence over distillation; BatchNorm re-estimation still runs before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autotune.errors import UserError
from autotune.inputs import call_model, first_output
from autotune.task import Task

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

MODES = ("bn", "kd", "none")
MIN_BN_SAMPLES = 16  # fewer inputs than this give noisier statistics than the trained ones
KD_BATCH = 32


@dataclass(frozen=True)
class Recovery:
    """What recovery a pruned candidate gets: ``bn`` (default), ``kd`` (bn + distillation), ``none``."""

    mode: str = "bn"
    steps: int = 100  # distillation steps per trial
    lr: float = 3e-3
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--recover {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.steps < 0:
            raise UserError(f"--recover-steps {self.steps}: must be zero or more")

    def to_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "steps": self.steps, "lr": self.lr, "temperature": self.temperature}


def recovery_batches(task: Task) -> list[ModelInputs]:
    """The recovery data as the model takes it: tensors by keyword for a task with dict example
    inputs, else positionally. Float arrays become float32 (the model's weights); integer ones
    (token ids, masks) keep their dtype."""
    data = task.recovery_data if task.recovery_data is not None else task.calibration
    batches: list[ModelInputs] = []
    for b in data:
        arrays = [np.asarray(a) for a in (b if isinstance(b, (tuple, list)) else (b,))]
        tensors = tuple(torch.as_tensor(a.astype(np.float32) if a.dtype.kind == "f" else a) for a in arrays)
        batches.append(dict(zip(task.input_names, tensors, strict=True)) if task.keyword else tensors)
    return batches


def _tensors(batch: ModelInputs) -> list[torch.Tensor]:
    return list(batch.values()) if isinstance(batch, dict) else list(batch)


def _rows(batch: ModelInputs) -> int:
    return len(_tensors(batch)[0])


def _rebuild(like: ModelInputs, tensors: Sequence[torch.Tensor]) -> ModelInputs:
    """``tensors`` in the form of ``like`` (by keyword or positional)."""
    return dict(zip(like, tensors, strict=True)) if isinstance(like, dict) else tuple(tensors)


def _first(out: object) -> torch.Tensor:
    return first_output(out)  # type: ignore[no-any-return]


def recalibrate_bn(model: nn.Module, batches: Sequence[ModelInputs]) -> bool:
    """Re-estimate every BatchNorm's running mean/var on ``batches`` (exact average, not EMA)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or sum(_rows(b) for b in batches) < MIN_BN_SAMPLES:
        return False
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
        m.train()
    with torch.no_grad():
        for batch in batches:
            call_model(model, batch)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()
    return True


def distill(
    student: nn.Module,
    teacher: nn.Module,
    batches: Sequence[ModelInputs],
    recovery: Recovery,
    seed: int = 0,
) -> None:
    """``recovery.steps`` Adam steps of soft-target distillation (KL at temperature T), in place."""
    if recovery.steps == 0 or not batches:
        return
    columns = [_tensors(b) for b in batches]
    pool = [torch.cat([c[i] for c in columns]) for i in range(len(columns[0]))]
    n = len(pool[0])

    def rows(idx: torch.Tensor | slice) -> ModelInputs:
        return _rebuild(batches[0], [t[idx] for t in pool])

    teacher.eval()
    with torch.no_grad():
        targets = torch.cat([_first(call_model(teacher, rows(slice(i, i + 64)))) for i in range(0, n, 64)])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=recovery.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / recovery.steps))
    )
    temp = recovery.temperature
    student.train()
    try:
        for _ in range(recovery.steps):
            idx = torch.randint(0, n, (min(KD_BATCH, n),), generator=gen)
            out = _first(call_model(student, rows(idx)))
            loss = F.kl_div(
                F.log_softmax(out / temp, dim=-1),
                F.softmax(targets[idx] / temp, dim=-1),
                reduction="batchmean",
            ) * (temp * temp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    finally:
        student.eval()


def recover(student: nn.Module, teacher: nn.Module, task: Task, recovery: Recovery) -> list[str]:
    """Apply recovery to a pruned ``student`` in place; returns what ran (``["bn", "kd"]``)."""
    ran: list[str] = []
    if recovery.mode == "none" and task.finetune is None:
        return ran
    batches = recovery_batches(task)
    if recovery.mode != "none" and recalibrate_bn(student, batches):
        ran.append("bn")
    if task.finetune is not None:
        task.finetune(student, teacher)
        ran.append("finetune")
    elif recovery.mode == "kd" and recovery.steps > 0:
        distill(student, teacher, batches, recovery)
        recalibrate_bn(student, batches)  # training-mode updates left an EMA of few batches
        ran.append("kd")
    return ran
