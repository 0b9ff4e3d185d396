"""How good is the online latency predictor, and what does it buy? Two figures on the demo search:

1. **Accuracy**: a demo search with the predictor off (every candidate measured, default
   protocol), its measured candidates replayed in trial order through a fresh predictor: trained
   on the first 30, the share of its predictions on the next 20 within +-10% of the measured
   ratio, and the MAPE (target: >= 90% within +-10%).
2. **Trials per minute** with and without the predictor: the same demo search (same seed and
   budget, fresh study) run for real with the predictor on; trials per minute of wall time, a
   skipped candidate counting as a trial (it got its answer).

Usage::

    python benchmarks/predictor.py                        # 60 trials, --budget 50%, both runs
    python benchmarks/predictor.py --keep runs-pred       # keep both studies
    python benchmarks/predictor.py --replay runs-pred/off # accuracy only, from a kept study

The demo's fine-tuning is off (latency does not depend on the weights' values; it costs about a
minute per pruned candidate on two busy cores). The load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import autotune
from autotune.result._pareto import ParetoSet
from autotune.space._profiles import load_profile
from autotune.space._space import build_space, load_preset
from autotune.study._predictor import LatencyPredictor
from autotune.task.demo import demo_task


def run(out: Path, name: str, args: argparse.Namespace, predictor: bool) -> tuple[ParetoSet, float]:
    task = demo_task()
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
        keep_going=True,
        predictor=predictor,
    )
    return result, time.perf_counter() - t0


def replay(result: ParetoSet, train: int, test: int) -> dict[str, Any]:
    """Measured candidates in trial order through a fresh predictor: errors on [train, train+test)."""
    task = demo_task()
    space = build_space(task, load_preset(None), load_profile(result.meta.device))
    x = {"input": task.example_inputs[0].numpy().astype(np.float32)}
    measured = sorted((t for t in result.trials if t.measurement.ratio), key=lambda t: t.number)
    model = LatencyPredictor(result.baselines["fp32"].artifact_path, x, space, min_train=train)
    errors = []
    for t in measured:
        predicted = model.observe(t.artifact_path, t.candidate.runtime, t.measurement.ratio)
        if predicted is not None and len(errors) < test:
            errors.append(abs(predicted - t.measurement.ratio) / t.measurement.ratio)
    err = np.asarray(errors)
    ratios = [t.measurement.ratio for t in measured]
    return {
        "measured": len(measured),
        "checked": int(err.size),
        "mape": float(err.mean()) if err.size else float("nan"),
        "within_10": float((err <= 0.10).mean()) if err.size else float("nan"),
        "quartiles": [round(float(q), 3) for q in np.percentile(ratios, [0, 25, 50, 75, 100])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=30)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--keep", help="keep the studies under this directory (off/, on/)")
    parser.add_argument("--replay", help="only the accuracy figure, from this kept study directory")
    parser.add_argument("--no-with", action="store_true", help="skip the run with the predictor")
    parser.add_argument("--off-study", help="reuse this kept study as the run without the predictor")
    args = parser.parse_args()
    load0 = os.getloadavg()
    if args.replay:
        kept = ParetoSet.load(args.replay)
        print(_accuracy_line(replay(kept, args.train, args.test), args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp)
        if args.off_study:  # a kept run: its wall time as recorded
            off = ParetoSet.load(args.off_study)
            off_s = off.meta.wall_s
        else:
            off, off_s = run(out, "off", args, predictor=False)
        print(_accuracy_line(replay(off, args.train, args.test), args), flush=True)
        n_off = len(off.trials) + len(off.failures)
        line = f"without the predictor: {n_off} trials in {off_s:.0f} s = {n_off / off_s * 60:.1f} trials/min"
        if not args.no_with:
            on, on_s = run(out, "on", args, predictor=True)
            n_on = len(on.trials) + len(on.failures) + len(on.skipped)
            s = on.meta.search["predictor"]
            line += (
                f"; with it: {n_on} trials ({len(on.skipped)} skipped) in {on_s:.0f} s = "
                f"{n_on / on_s * 60:.1f} trials/min; its live error on {s['checked']} candidates measured "
                f"anyway: MAPE {s['mape'] or math.nan:.1%}, within +-10% {s['within_10pct'] or math.nan:.0%}"
            )
    load1 = os.getloadavg()
    print(f"{line}; budget {args.budget}; load average {load0[0]:.2f} -> {load1[0]:.2f} (1 min)")


def _accuracy_line(r: dict[str, Any], args: argparse.Namespace) -> str:
    return (
        f"predictor accuracy on a {r['measured']}-candidate demo search: trained on the first {args.train}, "
        f"next {r['checked']}: within +-10% {r['within_10']:.0%} (target >= 90%), MAPE {r['mape']:.1%}; "
        f"measured ratios min/quartiles/max {r['quartiles']}"
    )


if __name__ == "__main__":
    main()
