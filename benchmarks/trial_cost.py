"""Per-trial cost split (compress, finetune, export, quantize, measure, evaluate).

Runs real searches at the default measurement protocol and prints, per model, the seconds
each stage took in every trial and the mean. Usage::

    python benchmarks/trial_cost.py            # demo + ResNet-18 @ 224x224
    python benchmarks/trial_cost.py --trials 8 --models demo
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import autotune
from autotune.task._task import Runner, Task

STAGES = ("compress", "finetune", "export", "quantize", "measure", "evaluate")


def resnet18_task() -> Task:
    """ResNet-18 at 224x224 with random weights; score = agreement with FP32 on 32 images."""
    from autotune.task.zoo import resnet18

    torch.manual_seed(0)
    model = resnet18(1000).eval()
    x = torch.randn(32, 3, 224, 224)
    with torch.no_grad():
        reference = model(x).argmax(1).numpy()

    def evaluate(runner: Runner) -> float:
        return float(np.mean(runner(x).argmax(1) == reference) * 100)

    calibration = [(x[i : i + 8].numpy(),) for i in range(0, 32, 8)]
    return Task(model, (x[:1],), evaluate, calibration=calibration, name="resnet18-224", metric="agreement")


def demo_task() -> Task:
    from autotune.task.demo import demo_task as make

    return make()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trials", type=int, default=6, help="trials per model (the first 6 are the baselines)"
    )
    parser.add_argument("--models", nargs="+", default=["demo", "resnet18"], choices=["demo", "resnet18"])
    args = parser.parse_args()
    for name in args.models:
        t0 = time.perf_counter()
        task = demo_task() if name == "demo" else resnet18_task()
        setup = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = autotune.search(
                task, budget="1s", trials=args.trials, out_dir=Path(tmp), progress=False, report=False
            )
            wall = time.perf_counter() - t0
        print(f"\n== {task.name}: {args.trials} trials in {wall:.1f} s (task setup {setup:.1f} s) ==")
        print(
            f"{'trial':>5} {'config':<34}" + "".join(f"{s:>10}" for s in STAGES) + f"{'total':>9}  median ms"
        )
        for t in sorted(result.trials, key=lambda t: t.number):
            cells = "".join(f"{t.timings.get(s, 0.0):>10.2f}" for s in STAGES)
            label = (t.baseline or t.candidate.describe())[:34]
            print(f"{t.number:>5} {label:<34}{cells}{sum(t.timings.values()):>9.2f}  {t.latency_ms:.3f}")
        means = [statistics.mean(t.timings.get(s, 0.0) for t in result.trials) for s in STAGES]
        total = sum(means)
        print(f"{'mean':>5} {'':<34}" + "".join(f"{m:>10.2f}" for m in means) + f"{total:>9.2f}")
        print(f"{'share':>5} {'':<34}" + "".join(f"{m / total:>10.0%}" for m in means))


if __name__ == "__main__":
    autotune.search  # noqa: B018 - fail early if the package is not installed
    main()
