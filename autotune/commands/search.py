"""Search compressed variants of a model for the best accuracy under a latency budget."""

from __future__ import annotations

import argparse
from pathlib import Path

from autotune.budget import ACCEPTED_ANY, DEFAULT_MAX_DROP


def add_arguments(p: argparse.ArgumentParser) -> None:
    # the choices and their help come from the registries the search itself reads
    from autotune.build import RECOVERIES
    from autotune.commands._task import add_task_arguments
    from autotune.study import SAMPLERS

    p.add_argument(
        "--budget", required=True, help="latency budget on the device: " + ACCEPTED_ANY.replace("%", "%%")
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="device profile name or profile .yaml (default: cpu; see 'autotune devices')",
    )
    add_task_arguments(p, ": scores accuracy and calibrates on these inputs")
    p.add_argument("--space", help="search space preset name or .yaml (default: search_spaces/default.yaml)")
    p.add_argument(
        "--trials",
        type=int,
        default=30,
        help="trials in total, baselines included; a resumed study continues to it (default: 30)",
    )
    p.add_argument(
        "--storage",
        help="Optuna storage URL (default: SQLite in OUT/STUDY/study.db); "
        "postgresql://... for distributed workers",
    )
    p.add_argument("--study", help="study name (default: TASK-DEVICE-BUDGET); the same name resumes")
    p.add_argument("--out", default="runs", type=Path, help="runs directory (default: runs)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default: 0)")
    p.add_argument(
        "--threads", type=int, help="fix the runtime thread count instead of the profile's choices"
    )
    p.add_argument("--agent", help="remote device: agent URL overriding the profile's agents")
    p.add_argument("--remeasure", action="store_true", help="ignore cached measurements and measure again")
    p.add_argument("--report", type=Path, help="HTML report path (default: reports/STUDY.html)")
    p.add_argument(
        "--quick", action="store_true", help="short measurement protocol (smoke tests; numbers are noisier)"
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on a terminal, no line per trial on stdout when it is not one",
    )
    p.add_argument(
        "--max-drop",
        default=DEFAULT_MAX_DROP,
        help="accuracy floor: points below the unmodified model (1.0), or a share of its score (1%%); "
        "nothing below it is ever called the best (default: %(default)s; none: no floor)",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="search on when the feasibility probe finds the budget out of reach",
    )
    p.add_argument("--sampler", **SAMPLERS.cli("Optuna sampler", "auto"))
    p.add_argument("--recover", **RECOVERIES.cli("recovery of pruned candidates", "bn"))
    p.add_argument(
        "--recover-steps", type=int, default=100, help="distillation steps with --recover kd (default: 100)"
    )
    p.add_argument(
        "--recover-final-steps",
        type=int,
        default=300,
        help="final recovery: when a pruned candidate under the budget is below the floor, distill the "
        "most promising pruned finalists this many steps on unlabeled inputs and re-measure them as "
        "extra trials at the end (default: %(default)s; 0: off)",
    )
    p.add_argument(
        "--recover-final-share",
        default="20%",
        help="time final recovery may take, as a share of the search's wall time "
        "(default: %(default)s; 0: off)",
    )
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="measure per-layer sensitivity first: guides the search, shown in the report",
    )
    p.add_argument(
        "--timeout", help="wall-clock limit, e.g. 30m; the search ends cleanly and keeps everything"
    )
    p.add_argument(
        "--artifacts",
        help="artifact store every worker reaches: a shared directory (file:///path) or "
        "s3://bucket/prefix (default: OUT/STUDY/artifacts); recorded with the study",
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        help="seconds between a running trial's heartbeats; a trial silent for 4 of them (its worker "
        "was killed) is failed and retried once (default: 30)",
    )
    p.add_argument(
        "--reconnect",
        default="2m",
        help="how long to keep retrying a lost database before stopping, e.g. 90s (default: 2m)",
    )
    p.add_argument(
        "--no-predictor",
        action="store_true",
        help="measure every candidate (default: candidates the online latency predictor puts beyond "
        "the budget by a safe margin are skipped, recorded as pruned with the predicted figure)",
    )

    p.add_argument(
        "--max-memory",
        help="the most memory the search may hold: a size (8GiB, 512MiB) or a share of the memory "
        "available at the start (50%%); a candidate that needs more fails with stage 'memory' and the "
        "search goes on (default: 80%%)",
    )


def run(args: argparse.Namespace) -> int:
    # check the cheap arguments before loading torch or the model, so bad input fails fast
    from autotune.commands._task import DEMO_TASK
    from autotune.records import Protocol
    from autotune.study import SearchConfig

    cfg = SearchConfig(
        budget=args.budget,
        device=args.device,
        trials=args.trials,
        space=args.space,
        storage=args.storage,
        study_name=args.study,
        out_dir=args.out,
        seed=args.seed,
        threads=args.threads,
        protocol=Protocol.quick() if args.quick else Protocol(),
        agent=args.agent,
        remeasure=args.remeasure,
        progress=not args.no_progress,  # the bar or a line per trial: tune/_progress.py decides
        report=args.report,
        max_drop=args.max_drop,
        keep_going=args.keep_going,
        sampler=args.sampler,
        recover=args.recover,
        recover_steps=args.recover_steps,
        recover_final_steps=args.recover_final_steps,
        recover_final_share=args.recover_final_share,
        sensitivity=args.sensitivity,
        timeout=args.timeout,
        predictor=not args.no_predictor,
        max_memory=args.max_memory,
        artifacts=args.artifacts,
        heartbeat=args.heartbeat,
        reconnect=args.reconnect,
        # what a worker started with 'autotune worker' loads (docs/distributed.md)
        task_ref=args.model or DEMO_TASK,
        task_data=args.data,
    )
    from autotune.commands._task import load_task
    from autotune.devices import device_for_profile
    from autotune.space import load_preset, load_profile
    from autotune.tune import run_search

    load_preset(args.space)
    # reach the device before loading a model: an unreachable agent should fail in a second
    device_for_profile(load_profile(args.device), agent=args.agent).close()
    task = load_task(args.model, args.data)
    result = run_search(task, cfg)
    for note in result.meta.notes:
        print(f"note: {note}")
    print(result.summary())
    if result.report_path:
        print(f"report: {result.report_path}")
    if result.best is not None:
        where = (
            str(result.run_dir)
            if args.storage is None
            else f"--storage URL --study {result.study.study_name}"
        )
        print(f"export the best: autotune export {where} --trial {result.best.number} -o best.onnx")
    return 0
