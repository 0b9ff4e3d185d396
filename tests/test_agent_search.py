"""Full searches measured by remote agents: loopback, a network namespace as a separate host,
a pool that loses an agent mid-job, an agent killed and restarted under a running study, and
the one-line error when no agent is reachable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import optuna
import psutil
import pytest
import torch
from optuna.trial import TrialState

import autotune
from autotune.agent.process import AgentProcess
from autotune.cli import main as cli_main
from autotune.devices import Protocol, RuntimeOptions, device_for_profile
from autotune.devices.remote import RemoteDevice
from autotune.errors import UserError
from autotune.result._pareto import ParetoSet
from autotune.space._profiles import load_profile
from autotune.task._task import Task
from autotune.tune._loop import SearchConfig, run_search

TOKEN = "search-test-token-0123456789abcdef"


def tiny_task() -> Task:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4),
    )  # fmt: skip
    x = torch.randn(2, 3, 16, 16)
    reference = model(x).detach().numpy()

    def evaluate(run: Any) -> float:
        return float(100.0 - np.abs(run(x) - reference).mean())

    return Task(source=model, example_inputs=(x,), evaluate=evaluate, name="tiny")


def write_profile(path: Path, agents: list[str], **options: Any) -> Path:
    lines = [
        "name: edge-test",
        "backend: remote",
        f"agents: [{', '.join(agents)}]",
        "knobs: {width: [1.0, 0.5], bits: [32, 8], sparsity: [0.0]}",
        "runtime: {threads: [1]}",
        "options: {" + ", ".join(f"{k}: {v}" for k, v in options.items()) + "}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def search(profile: Path, out: Path, trials: int = 4, agent: str | None = None) -> ParetoSet:
    # trial counts are asserted: no final recovery (its extra trials are as many as time allows)
    cfg = SearchConfig(budget="50ms", device=str(profile), trials=trials, out_dir=out, agent=agent,
                       protocol=Protocol.quick(), report=False, progress=False,
                       recover_final_steps=0)  # fmt: skip
    return run_search(tiny_task(), cfg)


def trials_of(result: ParetoSet) -> list[optuna.trial.FrozenTrial]:
    return result.study.get_trials(deepcopy=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def info(url: str, token: str | None = TOKEN) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.get(f"{url}/v1/info", headers=headers, timeout=10)
    resp.raise_for_status()
    return resp.json()


@pytest.fixture
def no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOTUNE_AGENT_TOKEN", raising=False)


# --------------------------------------------------------------------------- searches


def test_search_through_loopback_agent(tmp_path: Path, no_token_env: None) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with AgentProcess(token=TOKEN, root=tmp_path / "agent") as agent:
        # no token, then a wrong one: one clear line each
        lost = write_profile(tmp_path / "lost.yaml", [agent.url], token_file=str(tmp_path / "missing"))
        with pytest.raises(UserError, match="requires a token; set AUTOTUNE_AGENT_TOKEN or put"):
            device_for_profile(load_profile(str(lost)))
        (tmp_path / "wrong").write_text("not-the-right-token-at-all")
        wrong = write_profile(tmp_path / "wrong.yaml", [agent.url], token_file=str(tmp_path / "wrong"))
        with pytest.raises(UserError, match="refused the token"):
            device_for_profile(load_profile(str(wrong)))
        # the profile names a dead agent; --agent overrides it
        profile = write_profile(tmp_path / "edge.yaml", ["http://127.0.0.1:9"], token_file=str(token_file))
        result = search(profile, tmp_path / "runs", agent=agent.url)
        trials = trials_of(result)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
        for t in trials:
            m = t.user_attrs["measurement"]
            assert m["extra"]["agent"]["url"] == agent.url
            assert m["fingerprint"]["agent_version"] == autotune.__version__
        assert result.meta.fingerprint["backend"] == "remote"
        stored = {p.stem for p in (agent.root / "models").glob("*.onnx")}
        assert {t.user_attrs["artifact"]["sha256"] for t in trials} <= stored
        assert info(agent.url)["health"]["uploads"] == len(stored)  # each model uploaded once


@pytest.fixture
def netns() -> Iterator[tuple[str, str]]:
    """A network namespace joined by a veth pair: (namespace, its address) -- a second host."""
    if os.geteuid() != 0:
        pytest.skip("ip netns needs root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    tag = os.getpid() % 100000
    name, host_if, ns_if = f"autotune-t{tag}", f"atv{tag}h", f"atv{tag}n"
    net = f"10.213.{tag % 250}"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", name],
        ["ip", "addr", "add", f"{net}.1/30", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{net}.2/30", "dev", ns_if],
        ["ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=30)
            if done.returncode != 0:
                pytest.skip(
                    f"cannot set up a network namespace here: {' '.join(step)}: {done.stderr.strip()}"
                )
        yield name, f"{net}.2"
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def test_search_through_agent_in_network_namespace(
    tmp_path: Path, netns: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, address = netns
    prefix = ["ip", "netns", "exec", name]
    with AgentProcess(host=address, token=TOKEN, root=tmp_path / "agent", prefix=prefix) as agent:
        assert agent.url.startswith(f"http://{address}:")
        with pytest.raises(httpx.HTTPStatusError) as err:
            info(agent.url, token=None)
        assert err.value.response.status_code == 401
        assert info(agent.url)["auth"] == "bearer"
        monkeypatch.setenv("AUTOTUNE_AGENT_TOKEN", TOKEN)
        profile = write_profile(tmp_path / "edge.yaml", [agent.url])
        result = search(profile, tmp_path / "runs")
        trials = trials_of(result)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
        assert all(t.user_attrs["measurement"]["extra"]["agent"]["url"] == agent.url for t in trials)


# --------------------------------------------------------------------------- faults


def _model(tmp_path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper, save

    w = numpy_helper.from_array(np.eye(16, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    save(model, tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def _kill_when_running(agent: AgentProcess, limit: float = 10.0) -> threading.Thread:
    def run() -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                if info(agent.url)["queue"]["running"]:
                    agent.kill()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_pool_agent_killed_mid_job_retries_on_another(tmp_path: Path) -> None:
    hooks = {"AUTOTUNE_AGENT_TEST_HOOKS": "1"}
    with contextlib.ExitStack() as stack:
        a, b = (AgentProcess(token=TOKEN, root=tmp_path / n, env=hooks).launch() for n in "ab")  # in parallel
        stack.callback(a.close)
        stack.callback(b.close)
        a.wait_ready()
        b.wait_ready()
        device = RemoteDevice([a.url, b.url], token=TOKEN, retry_s=5, test_hooks={"sleep_s": 1.5})
        device.connect()
        device.pool.rr = len(device.agents) - 1  # the next job goes to a first
        job_processes = psutil.Process(a.pid).children(recursive=True)
        assert job_processes
        killer = _kill_when_running(a)
        m = device.measure(
            _model(tmp_path), {"x": np.ones((1, 16), np.float32)}, RuntimeOptions(), Protocol.quick()
        )
        killer.join()
        assert not a.alive
        # its job processes notice (stdin closes) and exit, releasing the device
        _, still_running = psutil.wait_procs(job_processes, timeout=10)
        assert not still_running
        assert m.status in ("ok", "unstable"), m.error
        assert m.extra["agent"]["url"] == b.url
        assert device.stats["retries"] >= 1 and device.stats["uploads"] == 2  # once per agent
        # the dead agent is skipped (back-off) while the other one serves
        device.test_hooks = None
        t0 = time.monotonic()
        for _ in range(3):
            m = device.measure(
                _model(tmp_path), {"x": np.ones((1, 16), np.float32)}, RuntimeOptions(), Protocol.quick()
            )
            assert m.usable and m.extra["agent"]["url"] == b.url
        assert time.monotonic() - t0 < 10
        device.close()


def test_every_agent_down_fails_the_measurement_with_its_reason(tmp_path: Path) -> None:
    port = free_port()
    device = RemoteDevice([f"http://127.0.0.1:{port}"], retry_s=0.5, backoff_s=0.1)
    m = device.measure(
        _model(tmp_path), {"x": np.ones((1, 16), np.float32)}, RuntimeOptions(), Protocol.quick()
    )
    assert m.status == "runtime_error" and not m.usable
    assert f"http://127.0.0.1:{port}: connection refused" in (m.error or "")
    assert device.stats["agent_failures"] >= 2  # retried with back-off before giving up
    device.close()


def test_study_survives_agent_killed_mid_job_and_restarted(
    tmp_path: Path, no_token_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"AUTOTUNE_AGENT_TEST_HOOKS": "1"}
    state: dict[str, Any] = {
        "agent": AgentProcess(token=TOKEN, root=tmp_path / "agent", env=env).start(),
        "calls": 0,
    }
    port = state["agent"].port
    original = RemoteDevice._run  # under measure and measure_paired (the study times pairs)
    runs = tmp_path / "runs"

    def measure(self: RemoteDevice, model_path: Path, *args: Any) -> Any:
        if "artifacts" not in Path(model_path).parts:  # the drift canary: not counted
            return original(self, model_path, *args)
        state["calls"] += 1
        if state["calls"] == 2:  # kill the agent while it measures this trial
            self.test_hooks = {"sleep_s": 3}
            killer = _kill_when_running(state["agent"])
            try:
                m = original(self, model_path, *args)
            finally:
                self.test_hooks = None
                killer.join()
            state["failed"] = m
            return m
        if state["calls"] == 3:  # restart it on the same port and root
            state["agent"] = AgentProcess(token=TOKEN, root=tmp_path / "agent", port=port, env=env).start()
        return original(self, model_path, *args)

    monkeypatch.setattr(RemoteDevice, "_run", measure)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    url = f"http://127.0.0.1:{port}"
    profile = write_profile(
        tmp_path / "edge.yaml", [url], token_file=str(token_file), retry_s=1.5, backoff_s=0.2
    )
    try:
        result = search(profile, runs, trials=5)
        trials = trials_of(result)
    finally:
        state["agent"].close()
    assert state["failed"].status == "runtime_error"
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(failed) == 1 and len(complete) == 4, [
        (t.state, t.user_attrs.get("fail_reason")) for t in trials
    ]
    reason = failed[0].user_attrs["fail_reason"]
    assert reason.startswith("measure: runtime_error: no agent could run the job") and url in reason
    assert failed[0].number < max(t.number for t in complete)  # the study went on after it


# --------------------------------------------------------------------------- no agent


def test_no_reachable_agent_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_token_env: None
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    profile = write_profile(tmp_path / "jetson.yaml", [url])
    with pytest.raises(UserError) as err:
        device_for_profile(load_profile(str(profile)))
    message = str(err.value)
    assert "\n" not in message and url in message and "connection refused" in message
    assert "autotune agent --host 0.0.0.0 --port" in message
    assert "agent-wheel" in message and "autotune[agent]" not in message  # never PyPI's autotune
    # --agent overrides the profile: the URL tried is the one given
    other = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match=other.replace(".", r"\.")):
        device_for_profile(load_profile(str(profile)), agent=other)
    # the shipped profiles: their agent is replaced by --agent, the one-line error names it
    for name in ("jetson", "raspberry-pi"):
        with pytest.raises(UserError, match=r"no agent reachable: " + other.replace(".", r"\.")):
            device_for_profile(load_profile(name), agent=other)
    # and through the command line
    monkeypatch.chdir(tmp_path)
    code = cli_main(["--budget", "10ms", "--device", str(profile), "--model", f"{__name__}:tiny_task",
                     "--trials", "1", "--no-progress"])  # fmt: skip
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err_lines) == 1 and url in err_lines[0] and "autotune agent" in err_lines[0]
    assert not (tmp_path / "runs").exists()
