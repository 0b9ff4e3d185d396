"""Small tasks for tests that drive the CLI in a subprocess (``--model tiny_tasks:conv_task``).

The score is agreement with the FP32 model's predictions on fixed random inputs, so any
compression that changes predictions shows up in it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import torch
from torch import nn

from autotune.task._task import Runner, Task


class TinyResNet(nn.Module):
    """Residual adds, a depthwise conv and a Linear head: the coupled-channel cases."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.conv2 = nn.Conv2d(c, 2 * c, 1)
        self.fc = nn.Linear(2 * c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + torch.relu(self.dw(torch.relu(self.bn1(self.conv1(x)))))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def agreement_task(model: nn.Module, x: torch.Tensor, name: str) -> Task:
    torch.manual_seed(0)
    model.eval()
    with torch.no_grad():
        reference = model(x).argmax(-1).numpy()

    def evaluate(runner: Runner) -> float:
        return float((runner(x).argmax(-1) == reference).mean() * 100)

    return Task(
        source=model,
        example_inputs=(x[:1],),
        evaluate=evaluate,
        calibration=[(x[i : i + 16].numpy(),) for i in range(0, len(x), 16)],
        name=name,
        metric="agreement",
    )


def conv_task() -> Task:
    torch.manual_seed(0)
    return agreement_task(TinyResNet(), torch.randn(64, 3, 16, 16), "tiny-conv")


def slow_conv_task() -> Task:
    """Like conv_task, but each evaluation sleeps, so a test can interrupt a run mid-way."""
    task = conv_task()
    inner = task.evaluate
    delay = float(os.environ.get("TINY_TASK_EVAL_DELAY", "0.5"))

    def evaluate(runner: Runner) -> float:
        time.sleep(delay)
        return inner(runner)

    task.evaluate = evaluate
    task.name = "tiny-slow"
    return task


def gated_conv_task() -> Task:
    """Like conv_task, but once a trial is COMPLETE in ``$TINY_TASK_GATE_DB``, an evaluation
    waits for the file ``$TINY_TASK_GATE``: the run cannot go on before the test that holds the
    gate has seen what the first trial printed. Not opened within 60 s, the gate opens itself
    and that evaluation fails (its trial is FAILED, which the test sees)."""
    task = conv_task()
    inner = task.evaluate
    gate, db = Path(os.environ["TINY_TASK_GATE"]), os.environ["TINY_TASK_GATE_DB"]

    def evaluate(runner: Runner) -> float:
        with sqlite3.connect(db, timeout=60) as con:
            done = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
        deadline = time.monotonic() + 60
        while done and not gate.exists():
            if time.monotonic() > deadline:
                gate.touch()
                raise RuntimeError("the gate was not opened: the test never read the first trial's line")
            time.sleep(0.05)
        return inner(runner)

    task.evaluate = evaluate
    task.name = "tiny-gated"
    return task


def cpu_work(units: int) -> float:
    """A fixed amount of single-threaded CPU work (numpy elementwise, no BLAS threads)."""
    import numpy as np

    a = np.linspace(0.0, 1.0, 200_000)
    total = 0.0
    for _ in range(units):
        total += float(np.sin(a).sum())
    return total


def eval_heavy_task() -> Task:
    """Like conv_task, but each evaluation also does ``TINY_TASK_EVAL_WORK`` units of fixed CPU
    work, the same for every candidate (benchmarks/scaling.py sets it to about 2 s of CPU)."""
    task = conv_task()
    inner = task.evaluate
    units = int(os.environ.get("TINY_TASK_EVAL_WORK", "0"))

    def evaluate(runner: Runner) -> float:
        cpu_work(units)
        return inner(runner)

    task.evaluate = evaluate
    task.name = "tiny-evalheavy"
    return task


def flaky_task() -> Task:
    """Evaluation fails on every int8 candidate: failure is data, the study goes on."""
    task = conv_task()
    inner = task.evaluate

    def evaluate(runner: Runner) -> float:
        import onnx

        ops = {n.op_type for n in onnx.load(str(runner.model_path)).graph.node}
        if "DequantizeLinear" in ops:
            raise RuntimeError("evaluation exploded on purpose")
        return inner(runner)

    task.evaluate = evaluate
    task.name = "tiny-flaky"
    return task


def hungry_task() -> Task:
    """Recovery of a pruned candidate asks for 16 GiB (never touched: under a small --max-memory
    the allocation itself fails, so no test uses that memory); unpruned candidates build."""
    task = conv_task()

    def finetune(student: nn.Module, teacher: nn.Module) -> None:
        torch.empty(16 << 30, dtype=torch.uint8)

    task.finetune = finetune
    task.name = "tiny-hungry"
    return task


def not_a_task() -> int:
    return 3
