"""Rebuild the self-contained HTML report of a run from its Optuna storage."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", type=Path, help="runs directory of the study (runs/STUDY)")
    p.add_argument("--storage", help="Optuna storage URL instead of a runs directory")
    p.add_argument("--study", help="study name within --storage (or within the run's database)")
    p.add_argument(
        "--artifacts",
        help="the study's artifact store as this machine reaches it, when not at the URL recorded "
        "with the study (failure tracebacks are fetched from it)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="HTML path to write (default: reports/STUDY.html in the current directory)",
    )


def run(args: argparse.Namespace) -> int:
    from autotune.errors import UserError
    from autotune.result import ParetoSet

    if args.run is None and args.storage is None:
        raise UserError("give a runs directory (autotune report runs/STUDY), or --storage URL --study NAME")
    if args.run is not None and args.storage is not None:
        raise UserError("give either a runs directory or --storage, not both")
    if args.output is not None and args.output.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"-o {args.output}: the report is an HTML file; use a .html path")
    result = ParetoSet.load(args.run, args.storage, args.study, artifacts=args.artifacts)
    if result.failures and result.store_reachable():
        result.fetch_tracebacks()  # the ones other workers stored: linked from the report
    path = result.report(args.output)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB; open it in a browser, no network needed)")
    if result.failures:
        where = f"; full tracebacks in {result.tracebacks_dir}" if result.tracebacks_dir else ""
        print(f"{len(result.failures)} failed trial(s), grouped by reason in the report{where}")
    return 0
