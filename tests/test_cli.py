"""The command line as a user meets it: help, bad input, Ctrl-C and resume (real processes)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
#: the checkout under test first, then the tiny tasks (an editable install may point elsewhere)
PYTHONPATH = os.pathsep.join([str(TESTS.parent), str(TESTS)])


def autotune(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autotune", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_options_and_commands(tmp_path: Path) -> None:
    out = autotune("--help", cwd=tmp_path)
    assert out.returncode == 0
    for needle in (
        "--budget",
        "--device",
        "--model",
        "--trials",
        "--storage",
        "autotune export",
        "autotune agent",
    ):
        assert needle in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--budget", "abc"], "10ms"),
        (["--budget", "-3ms"], "greater than zero"),
        (["--budget", "0"], "10ms"),
        (["--budget", "10ms", "--device", "nosuch"], "unknown device"),
        (["--budget", "10ms", "--model", "nosuch:fn"], "cannot import module 'nosuch'"),
        (["--budget", "10ms", "--model", "tiny_tasks:nope"], "has no function 'nope'"),
        (["--budget", "10ms", "--model", "tiny_tasks:not_a_task"], "not a Task"),
        (["--budget", "10ms", "--model", "missing.onnx"], "no such ONNX file"),
        (["--budget", "10ms", "--space", "nosuch"], "unknown preset"),
        (["--budget", "10ms", "--trials", "many"], "invalid int value"),
        (["--budget", "10ms", "--trials", "0"], "at least 1"),
        (["--budget", "10ms", "--threads", "0"], "--threads 0: must be at least 1"),
        ([], "--budget"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, args: list[str], needle: str) -> None:
    out = autotune(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-created


def test_misspelled_yaml_key_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text("knobs:\n  widths: [1.0, 0.5]\n")
    out = autotune("--budget", "10ms", "--space", "space.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown key 'widths' (did you mean 'width'?)" in out.stderr
    (tmp_path / "bad.yaml").write_text("knobs: {width: [1.0\n")
    out = autotune("--budget", "10ms", "--space", "bad.yaml", cwd=tmp_path)
    assert (
        out.returncode == 2 and "malformed YAML" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    )


def _complete_trials(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def _started(args: list[str], cwd: Path, env: dict[str, str], complete: int) -> subprocess.Popen[str]:
    """A search of ``args`` started in the background (trials slowed down to 0.7 s of evaluation),
    returned once ``complete`` trials are in its database (or it ended, or 120 s passed)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotune", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "TINY_TASK_EVAL_DELAY": "0.7", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    study = args[args.index("--study") + 1]
    deadline = time.time() + 120
    while _complete_trials(cwd / "runs" / study / "study.db") < complete and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    return proc


def test_ctrl_c_keeps_completed_trials_and_the_same_command_resumes(tmp_path: Path) -> None:
    args = [
        "--model",
        "tiny_tasks:slow_conv_task",
        "--budget",
        "50ms",
        "--trials",
        "10",
        "--quick",
        "--study",
        "cc",
    ]
    proc = _started(args, tmp_path, {}, complete=3)
    db = tmp_path / "runs" / "cc" / "study.db"
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)  # at a trial's start, often inside Optuna's storage writes
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume" in err and "Traceback" not in err
    kept = _complete_trials(db)
    assert 3 <= kept < 10

    out = autotune(*args, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert _complete_trials(db) == 10
    assert "Pareto set under the budget" in out.stdout


def test_a_killed_search_keeps_its_trials_and_the_next_run_removes_its_temporary_folders(
    tmp_path: Path,
) -> None:
    args = ["--model", "tiny_tasks:slow_conv_task", "--budget", "50ms", "--trials", "6", "--quick"]
    args += ["--study", "kill"]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    proc = _started(args, tmp_path, env, complete=2)
    db = tmp_path / "runs" / "kill" / "study.db"
    proc.kill()  # SIGKILL: no finalizer runs
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    left = list(tmpdir.glob("autotune-build-*"))
    assert left, "a killed build leaves its folder (nothing could remove it)"
    kept = _complete_trials(db)
    assert kept >= 2

    out = autotune(*args, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert _complete_trials(db) >= kept
    assert not any(p.exists() for p in left), "the next run removes the killed run's build folder"
    assert not [*tmpdir.glob("autotune-build-*"), *tmpdir.glob("autotune-canary-*")], "and its own at exit"


def test_onnx_model_gets_bits_and_runtime_knobs_only(tmp_path: Path) -> None:
    sys.path.insert(0, str(TESTS))
    from tiny_tasks import conv_task

    from autotune.task._onnx_export import export_onnx

    task = conv_task()
    export_onnx(task.model, task.example_inputs, tmp_path / "m.onnx")
    out = autotune("--model", "m.onnx", "--budget", "50ms", "--trials", "4", "--quick", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "width, heads and sparsity need a torch model" in out.stdout
    assert "fidelity" in out.stdout
