"""A study shared by workers on a real PostgreSQL server (issue 24): three workers finish a
30-trial study exactly; artifacts export from a fresh process elsewhere using only the database
and the artifact store; a worker killed with ``kill -9`` mid-trial; the database stopped for
20 s mid-run; and measurements from three workers never overlap on one device.

Each test starts its own server (tests/pg_server.py) and is skipped with the reason when the
server binaries or psycopg are missing. The task is tests/tiny_tasks.py's, on the quick
protocol; the device lock lives in the test's own folder, so other tests on this host do not
take turns with it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_server import PgServer, skip_reason

from autotune._util import sha256_file
from autotune.study import SETTINGS_KEY, counted

TESTS = Path(__file__).parent
pytestmark = pytest.mark.slow


@pytest.fixture
def pg() -> Iterator[PgServer]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with PgServer() as server:
        yield server


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(TESTS.parent), str(TESTS)])  # the checkout first
    return {**os.environ, "PYTHONPATH": path, "AUTOTUNE_LOCK_DIR": str(tmp / "locks"), **extra}


def _spawn(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "autotune", *args],
        cwd=cwd,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


_storages: dict[str, optuna.storages.RDBStorage] = {}


def _study(url: str, name: str) -> optuna.Study | None:
    """The study, through one storage per URL (polling must not open a connection pool a time)."""
    storage = _storages.setdefault(
        url, optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    )
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _settled(url: str, name: str) -> bool:
    study = _study(url, name)
    return study is not None and SETTINGS_KEY in study.user_attrs


def _start(
    pg: PgServer,
    tmp: Path,
    study: str,
    model: str,
    heartbeat: int,
    workers: int,
    env: dict[str, str],
    **extra: str,
) -> list[subprocess.Popen[str]]:
    """The first worker creates the study with ``autotune search``; the others join with only
    ``autotune worker --storage URL --study NAME``."""
    store = tmp / "shared-store"
    args = ["--model", model, "--budget", "50ms", "--trials", "30", "--quick", "--no-progress"]
    args += ["--storage", pg.url, "--study", study, "--artifacts", str(store), "--heartbeat", str(heartbeat)]
    args += [a for kv in extra.items() for a in (f"--{kv[0]}", kv[1])]
    procs = [_spawn([*args, "--out", "runs"], tmp / "w0", env, tmp / "w0.log")]
    _wait_for(lambda: _settled(pg.url, study), 300, "the study's settings")
    for i in range(1, workers):
        join = [
            "worker",
            "--storage",
            pg.url,
            "--study",
            study,
            "--out",
            "runs",
            "--no-progress",
            "--no-report",
        ]
        procs.append(
            _spawn(
                join + [a for kv in extra.items() for a in (f"--{kv[0]}", kv[1])],
                tmp / f"w{i}",
                env,
                tmp / f"w{i}.log",
            )
        )
    return procs


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 900) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        out.append((p.returncode, err))
    return out


def _measured(study: optuna.Study) -> tuple[list[optuna.trial.FrozenTrial], list[optuna.trial.FrozenTrial]]:
    """Completed trials measured fresh, and those answered from the measurement cache."""
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    fresh = [t for t in done if not t.user_attrs["measurement"]["cached"]]
    return fresh, [t for t in done if t.user_attrs["measurement"]["cached"]]


def test_three_workers_finish_exactly_and_every_artifact_exports_elsewhere(
    pg: PgServer, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    procs = _start(pg, tmp_path, "three", "tiny_tasks:conv_task", heartbeat=10, workers=3, env=env)
    for rc, err in _finish(procs):
        assert rc == 0, err
    study = optuna.load_study(study_name="three", storage=pg.url)
    assert counted(study) == 30  # not 31 or 32: surplus trials gave their slots back
    workers = {t.user_attrs.get("worker") for t in study.get_trials() if t.state == TrialState.COMPLETE}
    assert len(workers) >= 2, workers  # the work was shared

    # no identical artifact measured twice: one fresh measurement per (sha256, runtime options),
    # every other trial of it a cache hit
    fresh, cached = _measured(study)
    keys = [(t.user_attrs["artifact"]["sha256"], str(t.user_attrs["config"].get("runtime"))) for t in fresh]
    assert len(keys) == len(set(keys)), "an identical artifact was measured twice"
    print(f"30 trials: {len(fresh)} measured, {len(cached)} answered from the cache")

    # one measurement at a time on the device, across the three workers' processes
    spans = sorted(tuple(t.user_attrs["measurement"]["extra"]["measured_at"]) for t in fresh)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two workers' measurements overlapped on one device"

    # a fresh process elsewhere, with only the storage URL and the store: the workers' own
    # folders are gone, so every file comes from the store
    for i in range(3):
        subprocess.run(["rm", "-rf", str(tmp_path / f"w{i}")], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import sys; from autotune.result import ParetoSet\n"
        "r = ParetoSet.load(storage=sys.argv[1], study_name='three')\n"
        "for t in r.trials: print(t.number, t.sha256, t.export(f'out/t{t.number}.onnx'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, pg.url],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert len(rows) == len(fresh) + len(cached)
    for _, sha, path in rows:
        assert sha256_file(elsewhere / path) == sha
        assert (elsewhere / path).with_suffix(".json").is_file()
    best = subprocess.run(
        [
            sys.executable,
            "-m",
            "autotune",
            "export",
            "--storage",
            pg.url,
            "--study",
            "three",
            "-o",
            "best.onnx",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert best.returncode == 0, best.stderr
    assert (elsewhere / "best.onnx").is_file()
    # each trial's files are listed by optuna.artifacts, as upload_artifact would list them
    some = next(t for t in study.get_trials() if t.state == TrialState.COMPLETE)
    names = {m.filename for m in optuna.artifacts.get_all_artifact_meta(some, storage=study._storage)}
    assert {f"trial{some.number}.onnx", f"trial{some.number}.json"} <= names


def test_a_worker_killed_mid_trial_is_failed_by_the_heartbeat_and_retried(
    pg: PgServer, tmp_path: Path
) -> None:
    env = _env(tmp_path, TINY_TASK_EVAL_DELAY="1.5")  # evaluation dominates: a kill lands mid-trial
    procs = _start(pg, tmp_path, "kill", "tiny_tasks:slow_conv_task", heartbeat=2, workers=3, env=env)
    victim = procs[1]
    tag = f":{victim.pid}"

    def victim_running() -> bool:
        study = _study(pg.url, "kill")
        return (
            study is not None
            and any(
                t.state == TrialState.RUNNING and str(t.user_attrs.get("worker", "")).endswith(tag)
                for t in study.get_trials()
            )
            and counted(study) >= 3
        )

    def running_trials() -> list[int]:
        return [
            t.number
            for t in optuna.load_study(study_name="kill", storage=pg.url).get_trials()
            if t.state == TrialState.RUNNING and str(t.user_attrs.get("worker", "")).endswith(tag)
        ]

    # freeze the worker, then look: a trial it was running then is still running when it dies
    # (a plain kill could land between two trials: the check and the kill are not atomic)
    killed: list[int] = []
    for _ in range(20):
        _wait_for(victim_running, 600, "the second worker to be mid-trial")
        victim.send_signal(signal.SIGSTOP)
        if killed := running_trials():
            break
        victim.send_signal(signal.SIGCONT)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert len(killed) == 1
    for rc, err in _finish([procs[0], procs[2]]):
        assert rc == 0, err
    study = optuna.load_study(study_name="kill", storage=pg.url)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[killed[0]].state == TrialState.FAIL  # failed by the heartbeat, not left RUNNING
    assert "fail_reason" not in trials[killed[0]].user_attrs  # the worker died; the candidate did not fail
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed[0]]
    assert len(retries) == 1  # retried once (RetryHeartbeatStaleTrialCallback(max_retry=1))
    assert retries[0].state == TrialState.COMPLETE or "surplus" in retries[0].user_attrs
    # the same candidate: what the killed trial had chosen (a retry of an enqueued baseline
    # suggests the knobs the queue left open when it runs)
    assert trials[killed[0]].params.items() <= retries[0].params.items()
    assert counted(study) == 30


def test_the_database_stopped_20s_mid_run(pg: PgServer, tmp_path: Path) -> None:
    env = _env(tmp_path, TINY_TASK_EVAL_DELAY="0.5")
    # heartbeat 10 s: stale after 40 s, longer than the outage, so no live trial is taken over
    procs = _start(
        pg, tmp_path, "outage", "tiny_tasks:slow_conv_task", heartbeat=10, workers=2, env=env, reconnect="2m"
    )
    # a third worker that gives up after 5 s: it must stop with one line
    short = _spawn(
        [
            "worker",
            "--storage",
            pg.url,
            "--study",
            "outage",
            "--out",
            "runs",
            "--no-progress",
            "--reconnect",
            "5s",
        ],
        tmp_path / "w2",
        env,
        tmp_path / "w2.log",
    )
    _wait_for(lambda: counted(_study(pg.url, "outage")) >= 6, 600, "six trials")  # type: ignore[arg-type]
    before = {
        t.number: t.values
        for t in optuna.load_study(study_name="outage", storage=pg.url).get_trials()
        if t.state == TrialState.COMPLETE
    }
    pg.stop()
    time.sleep(20)
    pg.start()
    _, err = short.communicate(timeout=300)
    assert short.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("autotune: error: lost the study's database"), err
    assert "Traceback" not in err
    # a worker started after the restart joins and helps finish
    again = _spawn(
        ["worker", "--storage", pg.url, "--study", "outage", "--out", "runs", "--no-progress", "--no-report"],
        tmp_path / "w3",
        env,
        tmp_path / "w3.log",
    )
    for rc, err in _finish([*procs, again]):
        assert rc == 0, err  # the two with a 2-minute window rode the outage out
    study = optuna.load_study(study_name="outage", storage=pg.url)
    after = {t.number: t for t in study.get_trials()}
    for number, values in before.items():  # no completed trial lost
        assert after[number].state == TrialState.COMPLETE and after[number].values == values
    assert counted(study) == 30
