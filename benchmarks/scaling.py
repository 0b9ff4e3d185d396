"""Trials per minute with 1, 2 and 3 workers on one study, where evaluation dominates.

The task is tests/tiny_tasks.py's ``eval_heavy_task``: a small conv net whose evaluation scores
the ONNX model and does a fixed amount of single-threaded CPU work, about ``--eval-s`` seconds of
CPU (calibrated first on the thread's CPU clock); builds and the quick measurement protocol take
well under a second. One measurement thread (``--threads 1``), the predictor off and no recovery
(every trial is evaluated once).
Each run is a fresh study on a PostgreSQL server this script starts (tests/pg_server.py); the
first worker creates it with ``autotune search``, the others join with ``autotune worker``.

Throughput is counted between the first and the last trial completion of each run, so the
start-up of each process (imports, the reference measurement) is left out; joiners that start
later are in it. Usage::

    python benchmarks/scaling.py                  # 1, 2, 3 workers, 18 trials each
    python benchmarks/scaling.py --workers 1 3 --trials 12
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path[:0] = [str(ROOT), str(TESTS)]


def calibrate(eval_s: float) -> tuple[int, float]:
    """Units of tiny_tasks.cpu_work that take ``eval_s`` seconds of CPU time, and one unit's.

    Timed on the thread's CPU clock, so other engineers' load on this host stretches the wall
    time of an evaluation but not the amount of work each one is given."""
    import tiny_tasks

    tiny_tasks.cpu_work(20)  # warm
    t0 = time.thread_time()
    tiny_tasks.cpu_work(100)
    one = (time.thread_time() - t0) / 100
    return max(1, round(eval_s / one)), one


def run(url: str, workers: int, trials: int, units: int, work: Path) -> dict[str, float]:
    import optuna
    from optuna.trial import TrialState

    from autotune.study import counted

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
        "TINY_TASK_EVAL_WORK": str(units),
        "AUTOTUNE_LOCK_DIR": str(work / "locks"),
    }
    study = f"scaling-{workers}w"
    args = ["--model", "tiny_tasks:eval_heavy_task", "--budget", "50ms", "--trials", str(trials), "--quick"]
    # one evaluation per trial (no recovery, so no second score of the unrecovered candidate)
    args += ["--threads", "1", "--no-predictor", "--recover", "none", "--no-progress"]
    args += ["--storage", url, "--study", study]
    args += ["--artifacts", str(work / "store"), "--report", str(work / f"{study}.html")]
    t0 = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "autotune", *args, "--out", str(work / "w0")],
            env=env,
            stdout=subprocess.DEVNULL,
        )
    ]
    while True:  # the others join once the study records its settings
        try:
            if "autotune:settings" in optuna.load_study(study_name=study, storage=url).user_attrs:
                break
        except KeyError:
            pass
        time.sleep(0.5)
    join = ["worker", "--storage", url, "--study", study, "--no-progress", "--no-report"]
    for i in range(1, workers):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "autotune", *join, "--out", str(work / f"w{i}")],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a worker failed (exit {p.returncode})")
    wall = time.time() - t0
    s = optuna.load_study(study_name=study, storage=url)
    done = sorted(t.datetime_complete.timestamp() for t in s.get_trials() if t.state == TrialState.COMPLETE)
    evals = [t.user_attrs["timings"]["evaluate"] for t in s.get_trials() if t.state == TrialState.COMPLETE]
    measures = [t.user_attrs["timings"]["measure"] for t in s.get_trials() if t.state == TrialState.COMPLETE]
    window = done[-1] - done[0]
    return {
        "workers": workers,
        "counted": counted(s),
        "trials_per_min": round((len(done) - 1) / window * 60, 2),
        "mean_evaluate_s": round(sum(evals) / len(evals), 2),
        "mean_measure_s": round(sum(measures) / len(measures), 2),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--trials", type=int, default=18)
    parser.add_argument("--eval-s", type=float, default=2.0, help="target seconds of evaluation per trial")
    args = parser.parse_args()
    from pg_server import PgServer, skip_reason

    if (reason := skip_reason()) is not None:
        raise SystemExit(f"needs PostgreSQL: {reason}")
    units, one = calibrate(args.eval_s)
    print(
        f"evaluation: {units} units x {one * 1000:.1f} ms = {units * one:.2f} s of CPU;"
        f" load {os.getloadavg()}"
    )
    results = []
    with PgServer() as pg, tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            work = Path(tmp) / f"{n}w"
            work.mkdir()
            results.append(run(pg.url, n, args.trials, units, work))
            print(json.dumps(results[-1]), f"load {os.getloadavg()}", flush=True)
    base = results[0]["trials_per_min"]
    print("\nworkers  trials/min  speed-up  evaluate s  measure s")
    for r in results:
        print(
            f"{r['workers']:>7}  {r['trials_per_min']:>10.2f}  {r['trials_per_min'] / base:>8.2f}"
            f"  {r['mean_evaluate_s']:>10.2f}  {r['mean_measure_s']:>9.2f}"
        )


if __name__ == "__main__":
    main()
