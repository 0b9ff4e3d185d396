"""The one knowledge-distillation loop: a student trained toward its teacher's soft outputs.

It lives in the task stage, the earliest one that has torch models and their data, because two
stages use it: the built-in demo task's ``finetune`` (:mod:`autotune.task.demo`, this stage) and
the builder's ``--recover kd`` (:mod:`autotune.build`, a later stage that may import this one;
the task stage may not import the builder).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from autotune.inputs import call_model, first_output

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

TEACHER_CHUNK = 64  # inputs per teacher forward pass when its outputs are computed up front
#: steps timed before a time-limited distillation fits its schedule to the time left
CALIBRATION_STEPS = 5


def _rows(inputs: ModelInputs, idx: torch.Tensor | slice) -> ModelInputs:
    """The same rows of every input, in the form the model takes (by keyword or positional)."""
    if isinstance(inputs, dict):
        return {k: t[idx] for k, t in inputs.items()}
    return tuple(t[idx] for t in inputs)


def _count(inputs: ModelInputs) -> int:
    tensors = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
    return len(tensors[0]) if tensors else 0


def _logits(model: nn.Module, inputs: ModelInputs) -> torch.Tensor:
    return first_output(call_model(model, inputs))  # type: ignore[no-any-return]


def teacher_outputs(teacher: nn.Module, inputs: ModelInputs) -> torch.Tensor:
    """The teacher's logits on ``inputs`` (tensors by position or keyword, one row per sample),
    eval mode, no grad, in chunks; its train/eval mode is restored."""
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            return torch.cat(
                [
                    _logits(teacher, _rows(inputs, slice(i, i + TEACHER_CHUNK)))
                    for i in range(0, _count(inputs), TEACHER_CHUNK)
                ]
            )
    finally:
        teacher.train(was_training)


def knowledge_distill(
    student: nn.Module,
    teacher: nn.Module,
    inputs: ModelInputs,
    *,
    steps: int,
    lr: float = 3e-3,
    temperature: float = 4.0,
    batch_size: int = 32,
    labels: torch.Tensor | None = None,
    alpha: float = 0.7,
    seed: int = 0,
    targets: torch.Tensor | None = None,
    time_limit_s: float | None = None,
) -> int:
    """Distill ``teacher`` into ``student`` in place; leaves the student in eval mode. Returns
    the steps run.

    ``inputs``: the model's inputs as it takes them, tensors by position (a tuple) or by keyword
    (a dict), first dimension the samples. ``steps`` Adam steps on random batches of them,
    learning rate cosine-decayed from ``lr`` to 0. Loss = ``T^2 * KL(softmax(t/T) ||
    softmax(s/T))``; with ``labels``, ``alpha`` times that plus ``1 - alpha`` times the
    cross-entropy on the labels. ``targets``: the teacher's logits on ``inputs`` when
    already known (:func:`teacher_outputs`, e.g. cached across calls), else computed here once.
    Training runs through the student's ``forward``, so pruning masks installed as forward
    pre-hooks (``torch.nn.utils.prune``) stay applied. Deterministic for a given ``seed``: the
    batches come from their own generator, and the global RNG (dropout and the like inside the
    student) is seeded for the loop and restored after it.

    ``time_limit_s``: the whole call stops within about this many seconds (final recovery). The
    first :data:`CALIBRATION_STEPS` are timed and the cosine schedule is fitted to the steps the
    time left allows (so the learning rate still decays to zero), and the loop stops at the
    limit whatever happens; at least one step runs. Without it, exactly ``steps`` steps run.
    """
    t0 = time.perf_counter()
    n = _count(inputs)
    if steps <= 0 or n == 0:
        student.eval()
        return 0
    if targets is None:
        targets = teacher_outputs(teacher, inputs)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)

    horizon = steps  # the schedule's length: shortened once the step time is known

    def cosine(step: int) -> float:  # the learning rate decays from lr to 0 over the steps
        return 0.5 * (1.0 + math.cos(math.pi * min(step, horizon) / horizon))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    student.train()
    step, loop_start = 0, time.perf_counter()
    try:
        while step < horizon:
            idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
            out = _logits(student, _rows(inputs, idx))
            loss = F.kl_div(
                F.log_softmax(out / temperature, dim=-1),
                F.softmax(targets[idx] / temperature, dim=-1),
                reduction="batchmean",
            ) * (temperature * temperature)
            if labels is not None:
                loss = alpha * loss + (1 - alpha) * F.cross_entropy(out, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if time_limit_s is not None:
                elapsed = time.perf_counter() - t0
                if elapsed >= time_limit_s:
                    break
                if step == CALIBRATION_STEPS:  # fit the rest of the schedule to the time left
                    per_step = max((time.perf_counter() - loop_start) / step, 1e-9)
                    horizon = min(horizon, step + max(1, int((time_limit_s - elapsed) / per_step)))
            sched.step()
    finally:
        student.eval()
        torch.random.set_rng_state(rng_state)
    return step
