"""The measurement agent over HTTP: auth, uploads, jobs, faults, scheduling under load.

Every test talks to a real ``autotune agent`` process on loopback (ports picked by binding to
port 0) and checks that the agent still answers ``GET /v1/info`` afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import autotune
from autotune.agent.health import parse_tegrastats
from autotune.agent.process import AgentProcess
from autotune.agent.store import BadSha, ModelStore
from autotune.devices import Protocol, RuntimeOptions
from autotune.devices.remote import RemoteDevice

TOKEN = "agent-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: a very short protocol: these tests check plumbing, not latency
TINY = Protocol(warmup_s=0.0, warmup_runs=2, min_samples=5, min_time_s=0.0, max_retries=0)


def matmul_model(path: Path, n: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor(arr: np.ndarray, name: str = "x") -> dict[str, Any]:
    return {"name": name, "dtype": str(arr.dtype), "shape": list(arr.shape),
            "data": base64.b64encode(arr.tobytes()).decode()}  # fmt: skip


def alive(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/v1/info")
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_job(client: httpx.Client, job_id: str, limit: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        view = client.get(f"/v1/jobs/{job_id}", params={"wait": 5}).json()
        if view["status"] not in ("queued", "running"):
            return view
    raise AssertionError(f"job {job_id} did not finish in {limit} s")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("agent-root")
    proc = AgentProcess(
        token=TOKEN,
        root=root,
        env={"AUTOTUNE_AGENT_TEST_HOOKS": "1"},
        args=["--max-model-mb", "0.25", "--max-input-mb", "1"],
    )
    proc.start()
    yield proc
    proc.close()


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent.url, headers=AUTH, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return matmul_model(tmp_path_factory.mktemp("m") / "m.onnx").read_bytes()


@pytest.fixture
def uploaded(client: httpx.Client, model_bytes: bytes) -> str:
    digest = sha(model_bytes)
    assert client.put(f"/v1/models/{digest}", content=model_bytes).status_code in (200, 201)
    return digest


def job_body(model_sha: str, x: np.ndarray | None = None, **extra: Any) -> dict[str, Any]:
    x = np.ones((1, 32), np.float32) if x is None else x
    return {"model_sha256": model_sha, "backend": "ort-cpu", "options": {"threads": 1},
            "protocol": TINY.to_dict(), "inputs": [tensor(x)], **extra}  # fmt: skip


# --------------------------------------------------------------------------- auth and info


def test_token_required(agent: AgentProcess, client: httpx.Client, model_bytes: bytes) -> None:
    digest = sha(model_bytes)
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}):
        with httpx.Client(base_url=agent.url, headers=headers, timeout=10) as anon:
            for method, url, kw in (
                ("GET", "/v1/info", {}),
                ("PUT", f"/v1/models/{digest}", {"content": model_bytes}),
                ("POST", "/v1/jobs", {"json": job_body(digest)}),
                ("GET", f"/v1/jobs/{'0' * 32}", {}),
            ):
                resp = anon.request(method, url, **kw)
                assert resp.status_code == 401, (method, url, resp.text)
                assert resp.headers["www-authenticate"] == "Bearer"
                assert resp.json()["error"] == "unauthorized"
    info = alive(client)
    assert info["protocol"] == 1 and info["auth"] == "bearer"
    assert info["agent_version"] == autotune.__version__
    assert info["fingerprint"]["agent_version"] == autotune.__version__
    assert info["backends"]["ort-cpu"]["available"] is True
    assert "remote" not in info["backends"]
    assert {"depth", "running", "completed"} <= set(info["queue"])
    assert {"cpu_percent", "memory_available_mb", "load_avg"} <= set(info["health"])


# --------------------------------------------------------------------------- uploads


def test_upload_is_content_addressed(agent: AgentProcess, client: httpx.Client, tmp_path: Path) -> None:
    data = matmul_model(tmp_path / "u.onnx", seed=123).read_bytes()
    digest = sha(data)
    assert client.head(f"/v1/models/{digest}").status_code == 404
    resp = client.put(f"/v1/models/{digest}", content=data)
    assert resp.status_code == 201 and resp.json() == {"sha256": digest, "size": len(data), "created": True}
    assert client.head(f"/v1/models/{digest}").status_code == 200
    assert client.put(f"/v1/models/{digest}", content=data).json()["created"] is False
    assert (agent.root / "models" / f"{digest}.onnx").read_bytes() == data
    alive(client)


def _bad_models(tmp_path: Path) -> dict[str, bytes]:
    """Valid protobufs that must still be refused."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    custom = helper.make_model(
        helper.make_graph([helper.make_node("Evil", ["x"], ["y"], domain="com.attacker")], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.attacker", 1)],
    )
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for k, v in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    external = helper.make_model(
        helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    broken = helper.make_model(  # Relu with a missing input: fails onnx.checker
        helper.make_graph([helper.make_node("Relu", ["nope"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    return {
        "custom_domain": custom.SerializeToString(),
        "external_data": external.SerializeToString(),
        "checker": broken.SerializeToString(),
        "not_onnx": b"\x80\x04\x95 this is a pickle, not a model" + bytes(range(256)),
    }


def test_upload_rejections(
    agent: AgentProcess, client: httpx.Client, model_bytes: bytes, tmp_path: Path
) -> None:
    # the body does not hash to the id in the URL
    resp = client.put(f"/v1/models/{'a' * 64}", content=model_bytes)
    assert resp.status_code == 400 and resp.json()["error"] == "bad_hash"
    alive(client)
    # right hash, but not an acceptable ONNX model
    for what, data in _bad_models(tmp_path).items():
        resp = client.put(f"/v1/models/{sha(data)}", content=data)
        assert resp.status_code == 400, (what, resp.text)
        assert resp.json()["error"] == "invalid_model", what
        assert client.head(f"/v1/models/{sha(data)}").status_code == 404
        alive(client)
    # over the 0.25 MiB cap: refused by Content-Length, and by counting a chunked stream
    big = b"\0" * (300 * 1024)
    resp = client.put(f"/v1/models/{sha(big)}", content=big)
    assert resp.status_code == 413 and resp.json()["error"] == "too_large"
    alive(client)
    resp = client.put(
        f"/v1/models/{sha(big)}", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)])
    )
    assert resp.status_code == 413
    alive(client)
    assert list((agent.root / "tmp").iterdir()) == []  # nothing half-written is left behind


def test_path_traversal_is_rejected(agent: AgentProcess, client: httpx.Client, model_bytes: bytes) -> None:
    host, port = agent.url.removeprefix("http://").rsplit(":", 1)
    attempts = [
        "/v1/models/../../../../tmp/autotune-pwned",
        "/v1/models/..%2F..%2F..%2F..%2Ftmp%2Fautotune-pwned",
        "/v1/models/%2e%2e%2f%2e%2e%2fautotune-pwned",
        "/v1/models/" + "../" * 21 + "x",  # 64 characters
        "/v1/models/" + "A" * 64,  # uppercase hex is not a model id
        "/v1/models/" + "a" * 63 + "%00",
        "/v1/models/" + "a" * 64 + ".onnx",
    ]
    for path in attempts:
        for method in ("PUT", "HEAD"):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.putrequest(method, path, skip_accept_encoding=True)  # the path goes out verbatim
            conn.putheader("Authorization", f"Bearer {TOKEN}")
            conn.putheader("Content-Length", str(len(model_bytes) if method == "PUT" else 0))
            conn.endheaders(model_bytes if method == "PUT" else None)
            status = conn.getresponse().status
            conn.close()
            assert status in (400, 404), (method, path, status)
        alive(client)
    # a job naming a model by path is refused by the schema
    body = job_body("../../../../etc/passwd")
    assert client.post("/v1/jobs", json=body).status_code == 400
    assert not Path("/tmp/autotune-pwned").exists()
    stored = {p.name for p in (agent.root / "models").iterdir()}
    assert all(len(name) == 64 + 5 and name.endswith(".onnx") for name in stored)
    alive(client)


# --------------------------------------------------------------------------- jobs


def test_job_roundtrip(client: httpx.Client, uploaded: str) -> None:
    resp = client.post("/v1/jobs", json=job_body(uploaded))
    assert resp.status_code == 202
    view = wait_job(client, resp.json()["job_id"])
    assert view["status"] in ("ok", "unstable"), view
    m = view["measurement"]
    assert m["n"] >= TINY.min_samples and m["median_ms"] > 0
    assert m["fingerprint"]["agent_version"] == autotune.__version__
    assert m["fingerprint"]["backend"] == "ort-cpu"
    assert view["started_at"] <= view["finished_at"]
    assert set(view["phases"]) >= {"prepare", "measure"}


def test_job_bad_requests(client: httpx.Client, uploaded: str) -> None:
    x = np.ones((1, 32), np.float32)
    cases = {
        "unknown model": (job_body("b" * 64), 409),
        "unknown backend": ({**job_body(uploaded), "backend": "nope"}, 400),
        "unknown option": ({**job_body(uploaded), "options": {"custom_op_library": "/tmp/x.so"}}, 400),
        "bad threads": ({**job_body(uploaded), "options": {"threads": 0}}, 400),
        "bad base64": ({**job_body(uploaded), "inputs": [{**tensor(x), "data": "%%%"}]}, 400),
        "wrong size": ({**job_body(uploaded), "inputs": [{**tensor(x), "shape": [2, 32]}]}, 400),
        "pickle dtype": ({**job_body(uploaded), "inputs": [{**tensor(x), "dtype": "object"}]}, 400),
        "extra field": ({**job_body(uploaded), "library": "x.so"}, 400),
        "inputs over the cap": (job_body(uploaded, np.ones((1, 300_000), np.float32)), 413),
    }
    for what, (body, status) in cases.items():
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == status, (what, resp.text)
    resp = client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    alive(client)


def test_identical_inflight_jobs_are_coalesced(client: httpx.Client, uploaded: str) -> None:
    blocker = client.post("/v1/jobs", json=job_body(uploaded, test={"sleep_s": 1.0})).json()
    x = np.full((1, 32), 7.0, np.float32)
    first = client.post("/v1/jobs", json=job_body(uploaded, x)).json()
    second = client.post("/v1/jobs", json=job_body(uploaded, x)).json()
    other = client.post("/v1/jobs", json=job_body(uploaded, x + 1)).json()
    assert first["job_id"] == second["job_id"] and second["coalesced"] is True and not first["coalesced"]
    assert other["job_id"] != first["job_id"]
    view = wait_job(client, first["job_id"])
    assert view["status"] in ("ok", "unstable") and view["submissions"] == 2
    wait_job(client, blocker["job_id"])
    wait_job(client, other["job_id"])
    # once finished, the same job again is measured again (coalescing is for in-flight jobs)
    again = client.post("/v1/jobs", json=job_body(uploaded, x)).json()
    assert again["job_id"] != first["job_id"]
    wait_job(client, again["job_id"])


def test_job_past_its_timeout(client: httpx.Client, uploaded: str) -> None:
    t0 = time.monotonic()
    resp = client.post("/v1/jobs", json=job_body(uploaded, test={"sleep_s": 60}, timeouts={"measure_s": 1.0}))
    view = wait_job(client, resp.json()["job_id"])
    assert view["status"] == "timeout" and "measure phase exceeded its timeout of 1 s" in view["error"]
    assert time.monotonic() - t0 < 15
    resp = client.post("/v1/jobs", json=job_body(uploaded, test={"sleep_s": 60, "phase": "prepare"},
                                                  timeouts={"prepare_s": 0.5}))  # fmt: skip
    assert wait_job(client, resp.json()["job_id"])["status"] == "timeout"
    assert alive(client)["health"]["status"] == "ok"
    assert wait_job(client, client.post("/v1/jobs", json=job_body(uploaded)).json()["job_id"])["status"] in (
        "ok",
        "unstable",
    )


@pytest.mark.parametrize(
    ("crash", "status", "words"),
    [("abort", "runtime_error", "SIGABRT"), ("segv", "runtime_error", "SIGSEGV"), ("kill", "oom", "SIGKILL"),
     ("raise", "runtime_error", "test hook")],
)  # fmt: skip
def test_runtime_crash_in_job_process(
    client: httpx.Client, uploaded: str, crash: str, status: str, words: str
) -> None:
    before = alive(client)["health"]["job_processes_started"]
    resp = client.post("/v1/jobs", json=job_body(uploaded, test={"crash": crash}))
    view = wait_job(client, resp.json()["job_id"])
    assert view["status"] == status and words in view["error"], view
    info = alive(client)
    assert info["health"]["status"] == "ok" and info["queue"]["running"] is None
    view = wait_job(client, client.post("/v1/jobs", json=job_body(uploaded)).json()["job_id"])
    assert view["status"] in ("ok", "unstable")
    assert alive(client)["health"]["job_processes_started"] > before  # a fresh process took over


def test_cancel(client: httpx.Client, uploaded: str) -> None:
    running = client.post("/v1/jobs", json=job_body(uploaded, test={"sleep_s": 30})).json()["job_id"]
    queued = client.post("/v1/jobs", json=job_body(uploaded, np.zeros((1, 32), np.float32))).json()["job_id"]
    assert client.get(f"/v1/jobs/{queued}").json()["queue_position"] == 0
    assert client.delete(f"/v1/jobs/{queued}").json()["status"] == "cancelled"
    t0 = time.monotonic()
    client.delete(f"/v1/jobs/{running}")
    assert wait_job(client, running)["status"] == "cancelled"
    assert time.monotonic() - t0 < 10
    assert client.get(f"/v1/jobs/{'f' * 32}").status_code == 404
    assert client.get("/v1/jobs/not-a-job").status_code == 400
    alive(client)


# --------------------------------------------------------------------------- load


def test_load_8_clients_x_10_jobs(agent: AgentProcess, client: httpx.Client, tmp_path: Path) -> None:
    model = matmul_model(tmp_path / "load.onnx", seed=7)
    results: list[tuple[int, int, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(c: int) -> None:
        device = RemoteDevice([agent.url], token=TOKEN, read_timeout_s=30)
        try:
            for j in range(10):
                x = np.full((1, 32), c * 100 + j, np.float32)  # 80 distinct jobs: no coalescing
                m = device.measure(model, {"x": x}, RuntimeOptions(threads=1), TINY)
                with lock:
                    results.append((c, j, m))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            device.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == 80
    assert sorted((c, j) for c, j, _ in results) == [(c, j) for c in range(8) for j in range(10)]
    assert all(m.status in ("ok", "unstable") for _, _, m in results), [m.error for *_, m in results]
    job_ids = [m.extra["agent"]["job_id"] for *_, m in results]
    assert len(set(job_ids)) == 80  # none lost, none duplicated
    spans = sorted((m.extra["agent"]["started_at"], m.extra["agent"]["finished_at"]) for *_, m in results)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two measurements overlapped on one agent"
    assert alive(client)["queue"]["depth"] == 0


# --------------------------------------------------------------------------- without a token


def _loopback6() -> str:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return "::1"
    except OSError:
        return "127.0.0.1"


def test_loopback_agent_without_token_and_without_test_hooks(tmp_path: Path) -> None:
    host = _loopback6()  # IPv6 loopback where the machine has it: also loopback, no token needed
    with (
        AgentProcess(host=host, root=tmp_path / "root") as open_agent,
        httpx.Client(base_url=open_agent.url, timeout=30) as c,
    ):
        info = alive(c)
        assert info["auth"] == "none" and info["test_hooks"] is False
        data = matmul_model(tmp_path / "m.onnx").read_bytes()
        assert c.put(f"/v1/models/{sha(data)}", content=data).status_code == 201
        resp = c.post("/v1/jobs", json=job_body(sha(data), test={"crash": "abort"}))
        assert resp.status_code == 400 and "test hooks are disabled" in resp.json()["detail"]
        alive(c)


def test_agent_refuses_network_bind_without_token(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "autotune", "agent", "--host", "0.0.0.0", "--port", "0"]
    command += ["--root", str(tmp_path)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0 without a token" in lines[0]
    assert "--token-file" in lines[0]


def test_tegrastats_line_is_parsed() -> None:
    line = (
        "RAM 2448/30536MB (lfb 6573x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729,0%@729] EMC_FREQ 0%@2133 "
        "GR3D_FREQ 17%@[305,305] CPU@47.5C Tboard@35C GPU@-256C tj@47.5C VDD_GPU_SOC 2390mW/2390mW "
        "VDD_CPU_CV 398mW/398mW VIN_SYS_5V0 3224mW/3224mW"
    )
    parsed = parse_tegrastats(line)
    assert parsed["ram_used_mb"] == 2448 and parsed["ram_total_mb"] == 30536
    assert parsed["gpu_load_percent"] == 17
    assert parsed["temps_c"]["cpu"] == 47.5 and parsed["temps_c"]["tj"] == 47.5
    assert parsed["power_mw"] == {"VDD_GPU_SOC": 2390, "VDD_CPU_CV": 398, "VIN_SYS_5V0": 3224}


def test_store_ids_and_eviction(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, max_bytes=1000)
    for bad in ("../" * 21 + "x", "A" * 64, "a" * 63, "a" * 64 + "/", ""):
        with pytest.raises(BadSha):
            store.path(bad)
    shas = []
    for i in range(4):
        data = bytes([i]) * 100
        upload = store.new_upload()
        upload.write(data)
        digest = upload.finish()
        store.commit(upload, digest)
        os.utime(store.path(digest), (1000 + i, 1000 + i))  # oldest first
        shas.append(digest)
    store.touch(shas[0])  # used just now: no longer the oldest
    removed = store.evict(300, keep={shas[1]})
    assert removed == [shas[2]]  # shas[1] is kept (in flight), shas[2] is the least recently used
    assert store.evict(250, keep=set()) == [shas[1]]
    assert {p.stem for p in (tmp_path / "models").iterdir()} == {shas[0], shas[3]}
