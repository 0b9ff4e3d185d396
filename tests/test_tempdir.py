"""Temporary folders of killed processes: real processes, really killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from autotune._tempdir import OWNER_FILE, OwnedTemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]

MAKE_ONE = """
import os, signal, sys
from pathlib import Path
from autotune._tempdir import OwnedTemporaryDirectory
d = OwnedTemporaryDirectory(sys.argv[1])
(Path(d.name) / "model.onnx").write_bytes(b"x" * 1000)
print(d.name, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.readline()  # alive until the test closes stdin
"""


def _process(kind: str, how: str, tmpdir: Path) -> tuple[subprocess.Popen[str], Path]:
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", MAKE_ONE, kind, how],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_the_next_folder_removes_those_of_killed_processes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alive, alive_dir = _process("build", "wait", tmp_path)
    killed, killed_dir = _process("build", "kill", tmp_path)  # made after: its own sweep kept alive_dir
    assert killed.wait(timeout=30) == -signal.SIGKILL
    other_kind, other_dir = _process("canary", "kill", tmp_path)
    assert other_kind.wait(timeout=30) == -signal.SIGKILL
    older = tmp_path / "autotune-build-made-by-0.1"  # no owner file: left alone
    older.mkdir()
    for d in (killed_dir, alive_dir, other_dir):
        assert (d / "model.onnx").exists() and (d / OWNER_FILE).exists()

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mine = OwnedTemporaryDirectory("build")
    assert Path(mine.name).parent == tmp_path
    assert not killed_dir.exists()
    assert alive_dir.exists() and other_dir.exists() and older.exists()

    assert alive.stdin is not None
    alive.stdin.close()  # a normal exit removes its own folder
    assert alive.wait(timeout=30) == 0
    assert not alive_dir.exists()
    mine.cleanup()
    assert not Path(mine.name).exists()
