"""Join a study as one more worker: the task, device, space, budget and the rest come from it.

Everything a worker needs (task reference, device profile, space, budget, seed, protocol,
recovery options, heartbeat, artifact store) was recorded with the study when it was created.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autotune.study import SearchConfig, StudySettings
    from autotune.task import Task


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage", required=True, help="the study's Optuna storage URL (postgresql+psycopg://...)"
    )
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument(
        "--artifacts",
        help="the study's artifact store as this machine reaches it, when not at the URL recorded "
        "with the study (another mount point of the same directory)",
    )
    p.add_argument("--out", default="runs", type=Path, help="this worker's scratch folder (default: runs)")
    p.add_argument("--agent", help="remote device: this worker's agent URL, instead of the study's")
    p.add_argument(
        "--timeout", help="stop this worker after this long, e.g. 2h; the study goes on without it"
    )
    p.add_argument(
        "--reconnect", default="2m", help="how long to keep retrying a lost database, e.g. 90s (default: 2m)"
    )
    p.add_argument(
        "--max-memory",
        help="the most memory this worker may hold: a size (8GiB) or a share of the memory this "
        "machine has available at the start (50%%); a candidate that needs more fails with stage "
        "'memory' and the study goes on (default: 80%%)",
    )
    p.add_argument("--report", type=Path, help="HTML report path (default: reports/STUDY.html)")
    p.add_argument("--no-report", action="store_true", help="write no report when the study is done")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on a terminal, no line per trial on stdout when it is not one",
    )


def run(args: argparse.Namespace) -> int:
    import optuna

    from autotune.budget import parse_duration
    from autotune.errors import UserError
    from autotune.study import StudySettings, open_storage

    storage = open_storage(args.storage, reconnect_s=parse_duration(args.reconnect))

    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if args.study not in names:
        raise UserError(
            f"--study {args.study}: no such study in the storage (found: {', '.join(names) or 'none'})"
        )
    study = optuna.load_study(study_name=args.study, storage=storage)
    settings = StudySettings.from_study(study)
    if settings is None:
        raise UserError(
            f"study {args.study!r} records no worker settings (created by an older autotune): "
            "join it with the autotune search command that created it"
        )
    run_dir = args.out / args.study
    cfg = settings.to_config(
        run_dir,
        storage=args.storage,
        study_name=args.study,
        out_dir=args.out,
        progress=not args.no_progress,  # the bar or a line per trial: tune/_progress.py decides
        report=False if args.no_report else args.report,
        timeout=args.timeout,
        reconnect=args.reconnect,
        max_memory=args.max_memory,  # this machine's: not a study setting
        agent=args.agent,
        artifacts=args.artifacts,
    )
    task = _load(settings, cfg, run_dir)
    from autotune.tune import run_search

    result = run_search(task, cfg, settings=settings)
    print(result.summary())
    if result.report_path:
        print(f"report: {result.report_path}")
    return 0


def _load(settings: StudySettings, cfg: SearchConfig, run_dir: Path) -> Task:
    """The study's task, or one line (exit 2) saying why this worker cannot load it."""
    from autotune._util import error_line
    from autotune.commands._task import load_task
    from autotune.errors import UserError
    from autotune.study import Store

    task = settings.task
    try:
        if "ref" in task:
            return load_task(task["ref"])
        if task.get("onnx"):
            store = Store(cfg.artifacts or settings.artifacts)
            files = {}
            for key in ("onnx", "data"):
                entry = task.get(key)
                if entry:
                    dest = run_dir / ".settings" / "task" / entry["name"]
                    files[key] = str(store.fetch(entry["id"], dest, entry["sha256"]))
            return load_task(files["onnx"], files.get("data"))
    except UserError as exc:
        raise UserError(f"cannot load the study's task: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the task's own factory failed: one line, not a traceback
        raise UserError(f"cannot load the study's task {task.get('ref')!r}: {error_line(exc)}") from None
    raise UserError(
        f"study {cfg.study_name!r} was started from Python with a Task object: "
        "a worker cannot load it (pass task_ref='module:function' to autotune.search)"
    )
