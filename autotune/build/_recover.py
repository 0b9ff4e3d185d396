"""Built-in recovery for pruned candidates, so pruning is usable without training code.

Methods are registered in :data:`RECOVERIES` (``--recover``), read by the configuration check,
the CLI's choices and help, and :func:`recover`:

* ``bn``: BatchNorm statistics re-estimated on unlabeled inputs after width or sparsity changed
  the activations (cheap: forward passes only). The default.
* ``kd``: the same, then knowledge distillation from the unmodified model (soft targets, no
  labels) for a bounded number of steps, with the package's one distillation loop
  (:func:`autotune.task.knowledge_distill`). Final recovery (``--recover-final-steps``) uses it
  too, for the finalists: on top of a task's own ``finetune``, within a time limit.
* ``none``.

Data: ``Task.recovery_data``, defaulting to the calibration batches. A task's own ``finetune``
takes precedence over distillation and runs whatever the method; ``bn`` and ``kd`` re-estimate
BatchNorm before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from autotune._registry import Registry
from autotune.errors import UserError
from autotune.inputs import call_model
from autotune.task import Task, knowledge_distill

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

MIN_BN_SAMPLES = 16  # fewer inputs than this give noisier statistics than the trained ones
KD_BATCH = 32


@dataclass(frozen=True)
class Recovery:
    """What recovery a pruned candidate gets: a method of :data:`RECOVERIES` and its settings."""

    mode: str = "bn"
    steps: int = 100  # distillation steps per trial
    lr: float = 3e-3
    temperature: float = 4.0
    #: distillation stops within this many seconds (the schedule shrinks to fit); None: no limit
    time_limit_s: float | None = None
    #: distil after the task's own ``finetune`` too (final recovery), instead of in its place
    after_finetune: bool = False

    def __post_init__(self) -> None:
        RECOVERIES.check(self.mode)
        if self.steps < 0:
            raise UserError(f"--recover-steps {self.steps}: must be zero or more")

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"mode": self.mode, "steps": self.steps, "lr": self.lr}
        out["temperature"] = self.temperature
        if self.time_limit_s is not None:
            out["time_limit_s"] = self.time_limit_s
        return out


class Ran(list[str]):
    """What a recovery method ran (``["bn", "kd"]``: a list, as a method may return), with what
    it counted in :attr:`info` (``kd_steps``: the distillation steps that ran)."""

    def __init__(self, names: Iterable[str] = (), **info: Any) -> None:
        super().__init__(names)
        self.info: dict[str, Any] = dict(info)


#: A recovery method: (pruned student, unmodified teacher, task, settings) -> what ran, in place
#: (a list of names, or a :class:`Ran` with what it counted).
RecoveryMethod = Callable[[nn.Module, nn.Module, Task, Recovery], list[str]]

#: name -> (method, one-line help); ``--recover`` and ``SearchConfig.recover`` choose from it
RECOVERIES: Registry[RecoveryMethod] = Registry("--recover")
#: the method of the finalists' longer recovery (``--recover-final-steps``), by name
FINAL_RECOVERY = "kd"


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
) -> int:
    """Up to ``recovery.steps`` steps of soft-target distillation on ``batches`` (fewer when
    ``recovery.time_limit_s`` runs out first), in place; returns the steps run."""
    if not batches:
        return 0
    columns = [_tensors(b) for b in batches]
    pool = _rebuild(batches[0], [torch.cat([c[i] for c in columns]) for i in range(len(columns[0]))])
    return knowledge_distill(
        student,
        teacher,
        pool,
        steps=recovery.steps,
        lr=recovery.lr,
        temperature=recovery.temperature,
        batch_size=KD_BATCH,
        seed=seed,
        time_limit_s=recovery.time_limit_s,
    )


def _task_finetune(student: nn.Module, teacher: nn.Module, task: Task) -> list[str]:
    if task.finetune is None:
        return []
    task.finetune(student, teacher)
    return ["finetune"]


@RECOVERIES.register("bn", "BatchNorm statistics re-estimated on unlabeled inputs (forward passes only)")
def _bn(student: nn.Module, teacher: nn.Module, task: Task, recovery: Recovery) -> list[str]:
    ran = ["bn"] if recalibrate_bn(student, recovery_batches(task)) else []
    return ran + _task_finetune(student, teacher, task)


@RECOVERIES.register("kd", "bn, then distillation from the unmodified model (--recover-steps steps)")
def _kd(student: nn.Module, teacher: nn.Module, task: Task, recovery: Recovery) -> list[str]:
    batches = recovery_batches(task)
    ran = Ran(["bn"] if recalibrate_bn(student, batches) else [])
    if task.finetune is not None:  # the task's own training knows its data better
        ran.extend(_task_finetune(student, teacher, task))
        if not recovery.after_finetune:  # final recovery distils on top of it
            return ran
    if recovery.steps > 0:
        ran.info["kd_steps"] = steps = distill(student, teacher, batches, recovery)
        if steps:
            recalibrate_bn(student, batches)  # training-mode updates left an EMA of few batches
            ran.append("kd")
    return ran


@RECOVERIES.register("none", "no recovery (a task's own finetune still runs)")
def _none(student: nn.Module, teacher: nn.Module, task: Task, recovery: Recovery) -> list[str]:
    return _task_finetune(student, teacher, task)


def recover(student: nn.Module, teacher: nn.Module, task: Task, recovery: Recovery) -> Ran:
    """Apply ``recovery`` to a pruned ``student`` in place; returns what ran (``["bn", "kd"]``)
    and what it counted (:attr:`Ran.info`)."""
    ran = RECOVERIES.get(recovery.mode)(student, teacher, task, recovery)
    return ran if isinstance(ran, Ran) else Ran(ran)
