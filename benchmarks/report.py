"""Report size and open time for a 100-trial run (a benchmark, not a timed test).

Runs a real quick-protocol search (or reuses ``--run``), writes the HTML report, then opens it
in headless Chromium several times and prints the file size and the time from navigation to
every Plotly figure drawn. Targets: under 10 MB, under 3 s. Usage::

    python benchmarks/report.py                       # 100 trials of a small conv net
    python benchmarks/report.py --trials 30 --model demo
    python benchmarks/report.py --run runs/STUDY      # an existing run, no search
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import autotune
from autotune.devices import Protocol
from autotune.report.browser import Browser, chromium_path
from autotune.result._pareto import ParetoSet
from autotune.task._task import Runner, Task

SIZE_LIMIT_MB = 10.0
OPEN_LIMIT_S = 3.0


class ConvNet(nn.Module):
    """Eight weighted layers with residual adds: enough per-layer knobs for a busy report."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 1))
            for _ in range(3)
        )
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            x = torch.relu(x + block(x))
        return self.fc(x.mean((2, 3)))


def conv_task() -> Task:
    torch.manual_seed(0)
    model = ConvNet().eval()
    x = torch.randn(128, 3, 24, 24)
    with torch.no_grad():
        reference = model(x).argmax(1).numpy()

    def evaluate(runner: Runner) -> float:
        return float(np.mean(runner(x).argmax(1) == reference) * 100)

    calibration = [(x[i : i + 32].numpy(),) for i in range(0, 128, 32)]
    return Task(model, (x[:1],), evaluate, calibration=calibration, name="bench-convnet", metric="agreement")


def make_run(args: argparse.Namespace, out: Path) -> ParetoSet:
    if args.model == "demo":
        from autotune.task.demo import demo_task

        task = demo_task()
    else:
        task = conv_task()
    t0 = time.perf_counter()
    result = autotune.search(
        task, budget=args.budget, trials=args.trials, out_dir=out, study_name="bench-report",
        protocol=Protocol.quick(), progress=sys.stderr.isatty(), report=False,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    print(f"search: {len(result.trials)} complete, {len(result.failures)} failed in {wall:.0f} s")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing runs directory (skips the search)")
    parser.add_argument("--trials", type=int, default=100, help="trials of the search (default: 100)")
    parser.add_argument("--model", choices=["convnet", "demo"], default="convnet")
    parser.add_argument(
        "--budget", default="0.25ms", help="latency budget (default 0.25ms: some over, some under)"
    )
    parser.add_argument(
        "--out", type=Path, help="keep the run and report here (default: a temporary directory)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="browser opens to time (default: 5)")
    args = parser.parse_args()
    if chromium_path() is None:
        print("no Chromium: apt-get install -y chromium (or set AUTOTUNE_CHROMIUM)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        result = ParetoSet.load(args.run) if args.run else make_run(args, base / "runs")
        t0 = time.perf_counter()
        path = result.report(base / f"{result.study.study_name}.html")
        build_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        opens, cpus = [], []
        with Browser() as browser:
            for i in range(args.repeat):
                shot = base / f"{result.study.study_name}.png" if args.out and i == 0 else None
                r = browser.render(path, screenshot=shot)
                opens.append(r.open_s)
                cpus.append(r.renderer_cpu_s)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"report: {path}" + ("" if args.out else " (temporary)"))
        print(f"trials in the study: {len(result.study.trials)} ({len(result.trials)} complete)")
        print(f"build: {build_s:.2f} s")
        verdict = "OK" if size_mb < SIZE_LIMIT_MB else "OVER"
        print(f"size: {size_mb:.2f} MB (limit {SIZE_LIMIT_MB:.0f} MB) {verdict}")
        med = statistics.median(opens)
        print(
            f"open time: median {med:.2f} s, min {min(opens):.2f} s, max {max(opens):.2f} s "
            f"over {len(opens)} opens (limit {OPEN_LIMIT_S:.0f} s) {'OK' if med < OPEN_LIMIT_S else 'OVER'}"
        )
        print(
            f"renderer CPU time: median {statistics.median(cpus):.2f} s "
            "(the open time on an idle machine is close to this)"
        )
        print(
            f"figures: {r.figures} drawn {r.with_svg}, console errors {len(r.console_errors)}, "
            f"external requests {len(r.external_requests)}"
        )
        print(f"machine: {os.cpu_count()} CPUs, load average (1 min) {load:.2f} during the opens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
