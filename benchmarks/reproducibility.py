"""Does the search pick the same thing twice? The demo search, run twice from fresh studies with
the same seed and a relative budget; the two bests' confirmed ratios and whether the choices
match or are noise-equivalent (issue 10's "done when": ratios within 3%).

Usage::

    python benchmarks/reproducibility.py                       # --budget 50%, 20 trials, seed 0
    python benchmarks/reproducibility.py --trials 30 --finetune   # with the demo's KD fine-tuning

By default the demo's fine-tuning is off (latency does not depend on the weights' values, and it
costs about a minute per pruned candidate on two busy cores); accuracy then comes from the
built-in BatchNorm recovery alone. The CPU load of other processes is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import autotune
from autotune.measure.confirm import Figure, equally_fast
from autotune.task.demo import demo_task


def one_run(out: Path, args: argparse.Namespace, name: str) -> dict[str, Any]:
    task = demo_task()
    if not args.finetune:
        task.finetune = None
    t0 = time.perf_counter()
    result = autotune.search(
        task,
        budget=args.budget,
        trials=args.trials,
        seed=args.seed,
        out_dir=out,
        study_name=name,
        progress=False,
        report=False,
        predictor=not args.no_predictor,
    )
    wall = time.perf_counter() - t0
    best = result.best
    if best is None:
        return {"best": None, "wall_s": wall}
    c = result.confirmed.get(best.number) or {}
    return {
        "best": best.number,
        "config": best.candidate.to_dict(),
        "describe": best.candidate.describe(),
        "accuracy": best.accuracy,
        "size": best.size_bytes,
        "ratio": c.get("ratio", best.ratio),
        "ratio_ci": c.get("ratio_ci", best.measurement.ratio_ci),
        "latency_ms": c.get("latency_ms", best.latency_ms),
        "borderline": bool(c.get("borderline")),
        "confirmed": bool(c),
        "trials": len(result.trials),
        "wall_s": wall,
        "summary": result.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune", action="store_true", help="keep the demo's KD fine-tuning")
    parser.add_argument("--no-predictor", action="store_true", help="measure every candidate")
    parser.add_argument("--keep", help="keep both runs under this directory")
    args = parser.parse_args()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp)
        runs = [one_run(out, args, f"repro{i + 1}") for i in range(2)]
    load1 = os.getloadavg()
    for i, r in enumerate(runs, 1):
        if r["best"] is None:
            print(f"run {i}: no candidate met the budget ({r['wall_s']:.0f} s)")
            continue
        lo, hi = r["ratio_ci"]
        print(
            f"run {i}: best trial {r['best']} ({r['describe']}), accuracy {r['accuracy']:.2f}, "
            f"confirmed ratio {r['ratio']:.4f} [{lo:.4f}, {hi:.4f}], {r['latency_ms']:.3f} ms"
            f"{' borderline' if r['borderline'] else ''}; {r['trials']} trials in {r['wall_s']:.0f} s"
        )
    a, b = runs
    if a["best"] is None or b["best"] is None:
        return
    agree = max(a["ratio"], b["ratio"]) / min(a["ratio"], b["ratio"]) - 1

    def fig(r: dict[str, Any]) -> Figure:
        ci = (r["ratio_ci"][0], r["ratio_ci"][1])
        res = (ci[1] - ci[0]) / 2 / r["ratio"]
        return Figure(0, r["accuracy"], r["ratio"], r["size"], res, r["ratio"], ci)

    same = a["config"] == b["config"]
    tied = equally_fast(fig(a), fig(b))
    print(
        f"confirmed ratios of the two bests agree within {agree:.2%} (target <= 3%); same choice: {same}; "
        f"equally fast (intervals overlap): {tied}; accuracy {a['accuracy']:.2f} vs {b['accuracy']:.2f}, "
        f"size {a['size'] / 1024:.1f} vs {b['size'] / 1024:.1f} KiB; "
        f"load average before/after {load0[0]:.2f}/{load1[0]:.2f} (1 min), "
        f"{load0[1]:.2f}/{load1[1]:.2f} (5 min)"
    )


if __name__ == "__main__":
    main()
