"""Distributed search: two workers share one study in a real PostgreSQL server.

The server is Debian's PostgreSQL, started here in a temporary data directory (as the
``postgres`` user when the tests run as root); the test is skipped with its reason when the
server binaries or psycopg are missing.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_server import PgServer, skip_reason

from autotune.study import counted

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with PgServer() as pg:
        yield pg.url


def test_two_workers_share_one_study(postgres_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}  # checkout first
    args = ["--model", "tiny_tasks:conv_task", "--budget", "50ms", "--trials", "12", "--quick"]
    args += ["--storage", postgres_url, "--study", "shared", "--no-progress"]
    args += ["--recover-final-steps", "0"]  # the shared count is asserted; final recovery adds trials
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "autotune", *args, "--out", str(tmp_path / f"w{i}")],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
        assert "Pareto set under the budget" in out

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    # each worker stops once the shared count reaches 12, and a trial started when every slot
    # was claimed gives its slot back (study/_slots.py): exactly 12
    assert counted(study) == 12
    baselines = [t.user_attrs["baseline"] for t in complete if "baseline" in t.user_attrs]
    assert {"fp32", "int8", "w0.75", "w0.5"} <= set(baselines)
    # both workers really built and measured candidates (each keeps artifacts in its --out)
    for i in range(2):
        built = list((tmp_path / f"w{i}" / "shared" / "artifacts").glob("*.onnx"))
        assert built and all(a.stat().st_size > 0 for a in built)
