"""Write one trial's ONNX artifact and a JSON record of its configuration and figures."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", type=Path, help="runs directory of the study (runs/STUDY)")
    p.add_argument(
        "--trial", type=int, help="trial number (default: the best under the budget and above the floor)"
    )
    p.add_argument(
        "-o", "--output", type=Path, default=Path("best.onnx"), help="output .onnx path (default: best.onnx)"
    )
    p.add_argument("--storage", help="Optuna storage URL instead of a runs directory")
    p.add_argument("--study", help="study name within --storage")
    p.add_argument(
        "--artifacts",
        help="the study's artifact store as this machine reaches it, when not at the URL recorded "
        "with the study (file:///path or s3://bucket/prefix)",
    )


def run(args: argparse.Namespace) -> int:
    from autotune.errors import UserError
    from autotune.result import ParetoSet

    result = ParetoSet.load(args.run, args.storage, args.study, artifacts=args.artifacts)
    if args.trial is None:
        chosen = result.best
        if chosen is None:
            floor = "" if result.floor is None else f" and the accuracy floor ({result.floor:.2f})"
            raise UserError(
                f"no trial met the budget{floor}; pick one with --trial N (see the summary table)"
            )
    else:
        chosen = result.trial(args.trial)
    path = chosen.export(args.output)
    print(
        f"wrote {path} and {path.with_suffix('.json')} (trial {chosen.number}: "
        f"{chosen.accuracy:.2f} {result.meta.metric}, latency {chosen.latency_ms:.3f} ms)"
    )
    return 0
