"""The default accuracy floor and final recovery on real models (issue 26): what a default run
names as best, how far below FP32 it is, whether final recovery made it, and what that cost.

Models (trained on scikit-learn's digits): ``demo`` (the built-in task, exactly as ``autotune``
runs it, with its own finetune), ``resnet`` (ResNet-18-like, 64x64) and ``mobile``
(MobileNetV3-like, 64x64), both from ``benchmarks/search_quality.py`` with built-in recovery
only, as a user with a torch model and no training code gets. Budgets are shares of each model's
FP32 latency (paired ratio, onnxruntime CPU, one thread). Every search uses the default options
(``--max-drop 5%``, ``--recover bn``, final recovery 300 steps within 20% of the wall time);
only the trial count, the seed and the measurement protocol are set: search_quality's shorter
one by default (``--full-protocol``: autotune's default), to fit a shared VM's time.

Torch trains on ``--torch-threads`` threads (default 1; the demo's finetune asks for 2 and is
capped too): on this 2-core VM, shared with other jobs, 10 distillation steps of the demo model
took 43.6 s on 2 threads and 9.3 s on 1. Usage::

    python benchmarks/floor.py                         # 3 models x 35%, 20%; 20 trials each
    python benchmarks/floor.py --models demo --budgets 35% --trials 12
    python benchmarks/floor.py --out runs/floor ...; python benchmarks/floor.py --table-from runs/floor
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

# this checkout's autotune (not another installed one), and search_quality's trained models
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from search_quality import PROTOCOL, digits_task

import autotune
from autotune.records import Protocol
from autotune.result import ParetoSet
from autotune.task import Task

MODELS = ("demo", "resnet", "mobile")


def task_for(name: str) -> Task:
    if name == "demo":
        from autotune.task.demo import demo_task

        return demo_task()  # as `autotune` runs it: the demo's own finetune included
    return digits_task(name)


def header() -> str:
    """When, what and where: the date, this checkout's commit, the CPU and its load."""
    import datetime as dt
    import os
    import platform
    import subprocess

    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = f"{names[0]} x{len(names)}" if names else cpu
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return f"{now}, commit {commit or '?'}, CPU {cpu}, load average {load}"


def cap_torch_threads(n: int) -> None:
    """Train on ``n`` torch threads, the demo's finetune included (it asks for 2)."""
    import autotune.task.demo

    torch.set_num_threads(n)

    @contextlib.contextmanager
    def capped(wanted: int) -> Iterator[None]:
        previous = torch.get_num_threads()
        torch.set_num_threads(min(wanted, n))
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    autotune.task.demo._torch_threads = capped  # type: ignore[assignment]


def row(name: str, budget: str, result: ParetoSet, wall_s: float) -> dict[str, Any]:
    """One line of the table: what the default run names, and what final recovery did."""
    ref = result.reference_accuracy or float("nan")
    final = result.meta.search.get("final", {})
    best = result.best
    out: dict[str, Any] = {
        "model": name,
        "budget": budget,
        "fp32": ref,
        "floor": result.floor,
        "wall_s": wall_s,
        "final_status": final.get("status", "?"),
        "final_s": final.get("wall_s", 0.0),
        "final_trials": len(final.get("trials", [])),
        "left_out": final.get("left_out", 0),
    }
    if best is None:
        under = result.most_accurate_under_budget()
        if under is None:  # the latency side: the feasibility probe's verdict
            fastest = min(result.trials, key=lambda t: t.ratio or float("inf"))
            out["best"] = f"none: nothing meets the budget (fastest: trial {fastest.number}, "
            out["best"] += f"x{fastest.ratio:.3f})"
        else:
            out["best"] = (
                f"none meets both limits (most accurate under the budget: trial {under.number}, "
                f"{under.accuracy:.2f})"
            )
        return out
    recovered = bool(best.baseline and best.baseline.startswith("final-kd#"))
    steps = (best.recovery or {}).get("kd_steps")
    out.update(
        best=f"trial {best.number}: {best.describe().replace(' | ', ', ')}",  # no '|' in a table
        accuracy=best.accuracy,
        drop=ref - best.accuracy,
        ratio=best.ratio,
        recovered=f"yes ({best.baseline}, {steps} steps)" if recovered else "no",
    )
    return out


def show(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| model | budget | FP32 | floor | best (trial: config) | accuracy | drop | x FP32 | recovered "
        "by final recovery | final recovery: status, finalists, extra wall time | run wall time |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        acc = f"{r['accuracy']:.2f}" if "accuracy" in r else "-"
        drop = f"{r['drop']:.2f}" if "drop" in r else "-"
        ratio = f"{r['ratio']:.3f}" if r.get("ratio") is not None else "-"
        left = f", {r['left_out']} left out" if r["left_out"] else ""
        final = f"{r['final_status']}, {r['final_trials']} distilled{left}, +{r['final_s']:.0f} s"
        print(
            f"| {r['model']} | {r['budget']} | {r['fp32']:.2f} | {r['floor']:.2f} | {r['best']} | {acc} | "
            f"{drop} | {ratio} | {r.get('recovered', '-')} | {final} | {r['wall_s']:.0f} s |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--budgets", nargs="+", default=["35%", "20%"])
    parser.add_argument("--trials", type=int, default=20, help="trials per search (default: 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--full-protocol",
        action="store_true",
        help="autotune's default measurement protocol instead of search_quality's shorter one",
    )
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for training")
    parser.add_argument(
        "--table-from", type=Path, help="print the table of the studies in this runs directory, no search"
    )
    parser.add_argument("--out", type=Path, help="runs directory (default: a temporary one)")
    args = parser.parse_args()
    if args.table_from:  # e.g. the --out of an earlier run (search wall time: the study's own)
        rows = []
        for name in args.models:
            for budget in args.budgets:
                run = args.table_from / f"{name}-{budget.replace('%', 'pct')}-{args.trials}-s{args.seed}"
                if run.is_dir():
                    result = ParetoSet.load(run)
                    rows.append(row(name, budget, result, result.meta.wall_s))
        show(rows)
        return
    print(header(), flush=True)
    protocol = Protocol() if args.full_protocol else PROTOCOL
    cap_torch_threads(args.torch_threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="floor-bench-") as tmp:
        out = args.out or Path(tmp)
        for name in args.models:
            task = task_for(name)
            for budget in args.budgets:
                t0 = time.perf_counter()
                result = autotune.search(
                    task,
                    budget=budget,
                    trials=args.trials,
                    seed=args.seed,
                    out_dir=out,
                    study_name=f"{name}-{budget.replace('%', 'pct')}-{args.trials}-s{args.seed}",
                    protocol=protocol,
                    progress=False,
                    report=False,
                )
                wall = time.perf_counter() - t0
                rows.append(row(name, budget, result, wall))
                print(f"[{name} @ {budget}] {wall:.0f} s", flush=True)
                print(result.summary().split("\ntrial ")[0], flush=True)  # the verdict, not the table
    show(rows)
    print(f"\nended: {header()}")


if __name__ == "__main__":
    main()
