"""The device install, for real: build this project's wheel, install it with the ``agent`` extra
into a fresh virtual environment without torch, start the agent from there on loopback, and run
a search from this environment that measures through it.

Needs the package index (the fresh environment downloads onnx, onnxruntime, fastapi, ...);
everything it writes, pip's cache included, stays under the test's tmp directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from autotune.agent.process import AgentProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "wheel-test-token-0123456789abcdef"


def _run(command: list[str], env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd="/")
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr[-2000:]}"
    return done.stdout


def test_wheel_installs_an_agent_without_torch_and_a_search_measures_through_it(tmp_path: Path) -> None:
    from test_agent_search import search, trials_of, write_profile

    env = {**os.environ, "PIP_CACHE_DIR": str(tmp_path / "pip-cache"), "PYTHONPATH": ""}
    t0 = time.monotonic()
    out = _run([sys.executable, "-m", "autotune", "agent-wheel", "--source", str(ROOT),
                "--out", str(tmp_path / "dist")], {**env, "PYTHONPATH": str(ROOT)})  # fmt: skip
    wheels = list((tmp_path / "dist").glob("autotune_hw-*-py3-none-any.whl"))
    assert len(wheels) == 1, out
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env)
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", f"{wheels[0]}[agent]"], env)
    t_install = time.monotonic() - t0
    probe = "import importlib.util as u, autotune; print(autotune.__file__, u.find_spec('torch') is None)"
    where, no_torch = _run([python, "-c", probe], env).split()
    assert where.startswith(str(venv)) and no_torch == "True", (where, no_torch)
    with AgentProcess(token=TOKEN, root=tmp_path / "agent", python=python, cwd=tmp_path,
                      env={"PYTHONPATH": ""}) as agent:  # fmt: skip
        assert (tmp_path / "venv").exists() and agent.alive
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        profile = write_profile(tmp_path / "edge.yaml", [agent.url], token_file=str(token_file))
        result = search(profile, tmp_path / "runs", trials=4)
        trials = trials_of(result)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
        assert all(t.user_attrs["measurement"]["extra"]["agent"]["url"] == agent.url for t in trials)
        medians = [t.user_attrs["measurement"]["median_ms"] for t in trials]
    print(f"\n[wheel] {wheels[0].name}: built and installed with [agent] in a fresh venv without torch "
          f"in {t_install:.0f} s; agent from {where}; 4 trials measured through it, medians (ms) "
          f"{', '.join(f'{m:.3f}' for m in medians)}; {time.monotonic() - t0:.0f} s in all")  # fmt: skip
