"""An agent you can leave on a network (issue 9): each finding of the audit, against a real agent
process on loopback. Every test checks the agent still serves afterwards.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import resource
import select
import socket
import stat
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
import psutil
import pytest
from onnx import TensorProto, helper, numpy_helper

from autotune.agent.process import AgentProcess
from autotune.agent.store import ModelStore
from autotune.devices import Protocol, RuntimeOptions
from autotune.devices.remote import RemoteDevice
from autotune.errors import UserError

TOKEN = "hardening-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY = Protocol(warmup_s=0.0, warmup_runs=2, min_samples=5, min_time_s=0.0, max_retries=0)
X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])


def model_bytes(
    graph: onnx.GraphProto, functions: list[onnx.FunctionProto] | None = None, **kw: Any
) -> bytes:
    opsets = [helper.make_opsetid("", 17), *kw.pop("extra_opsets", [])]
    model = helper.make_model(graph, opset_imports=opsets, functions=functions or [])
    model.ir_version = 9
    return model.SerializeToString()


def relu_model(seed: float = 0.0) -> bytes:
    c = numpy_helper.from_array(np.full((1, 4), seed, np.float32), "c")
    nodes = [helper.make_node("Add", ["x", "c"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    return model_bytes(helper.make_graph(nodes, "g", [X], [Y], [c]))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor(arr: np.ndarray, name: str = "x") -> dict[str, Any]:
    return {"name": name, "dtype": str(arr.dtype), "shape": list(arr.shape),
            "data": base64.b64encode(arr.tobytes()).decode()}  # fmt: skip


def job(model_sha: str, x: np.ndarray | None = None, **extra: Any) -> dict[str, Any]:
    x = np.ones((1, 4), np.float32) if x is None else x
    return {"model_sha256": model_sha, "backend": "ort-cpu", "options": {"threads": 1},
            "protocol": TINY.to_dict(), "inputs": [tensor(x)], **extra}  # fmt: skip


def wait_job(client: httpx.Client, job_id: str, limit: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        view = client.get(f"/v1/jobs/{job_id}", params={"wait": 5}).json()
        if view["status"] not in ("queued", "running"):
            return view
    raise AssertionError(f"job {job_id} did not finish in {limit} s")


def alive(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/v1/info")
    assert resp.status_code == 200, resp.text
    return resp.json()


def upload(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.put(f"/v1/models/{sha(data)}", content=data)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    args = ["--max-input-mb", "1", "--max-queued-input-mb", "0.5", "--job-memory-mb", "2048",
            "--allowed-host", "agent.example"]  # fmt: skip
    proc = AgentProcess(token=TOKEN, root=tmp_path_factory.mktemp("hard"), args=args,
                        env={"AUTOTUNE_AGENT_TEST_HOOKS": "1"})  # fmt: skip
    with proc:
        yield proc


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent.url, headers=AUTH, timeout=30) as c:
        yield c


# --------------------------------------------------------------------------- 1: idle sockets


def _closed_by_peer(sock: socket.socket) -> bool:
    ready, _, _ = select.select([sock], [], [], 0)
    if not ready:
        return False
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_idle_and_slow_header_sockets_do_not_lock_out_clients(tmp_path: Path) -> None:
    timeout = 5.0
    args = ["--header-timeout", str(timeout), "--max-connections-per-client", "32"]
    with (
        AgentProcess(token=TOKEN, root=tmp_path / "root", args=args) as agent,
        httpx.Client(base_url=agent.url, headers=AUTH, timeout=30) as client,
    ):
        port = agent.port
        socks: list[socket.socket] = []
        t0 = time.monotonic()
        for i in range(300):  # from another loopback address than the real client
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            if i % 2:  # slow headers: a request head that never completes
                s.sendall(b"GET /v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(s)
        # once it has taken them in (well before the header timeout), the agent holds no more
        # than the cap from one address
        proc = psutil.Process(agent.pid)
        held = []
        while time.monotonic() - t0 < timeout - 1:
            held.append(sum(1 for c in proc.net_connections("tcp") if c.raddr and c.raddr.ip == "127.0.0.2"))
            if held[-1] <= 32:
                break
            time.sleep(0.05)
        assert held[-1] <= 32, held
        # an authenticated client is served while they are open
        data = relu_model(1.0)
        assert upload(client, data).status_code == 201
        resp = client.post("/v1/jobs", json=job(sha(data)))
        assert resp.status_code == 202, resp.text
        view = wait_job(client, resp.json()["job_id"])
        assert view["status"] in ("ok", "unstable"), view
        # the agent closes every one of them: beyond the per-address cap at once, the rest
        # when their header timeout expires
        closed_at: dict[int, float] = {}
        deadline = time.monotonic() + timeout + 30
        while len(closed_at) < len(socks) and time.monotonic() < deadline:
            for i, s in enumerate(socks):
                if i not in closed_at and _closed_by_peer(s):
                    closed_at[i] = time.monotonic() - t0
            time.sleep(0.05)
        for s in socks:
            s.close()
        assert len(closed_at) == 300, f"{300 - len(closed_at)} sockets still open"
        print(f"\n[slowloris] 300 idle/slow-header sockets from one address: the agent held "
              f"{held[-1]} once it had taken them in (cap 32); an authenticated job finished "
              f"{view['status']}; all 300 closed by the agent {max(closed_at.values()):.1f} s after "
              f"the first connect (header timeout {timeout:g} s)")  # fmt: skip
        alive(client)


# --------------------------------------------------------------------------- 2: queue bytes


def test_queued_inputs_have_a_byte_budget(client: httpx.Client) -> None:
    data = relu_model(2.0)
    assert upload(client, data).status_code in (200, 201)
    digest = sha(data)
    blocker = client.post("/v1/jobs", json=job(digest, test={"sleep_s": 3}))
    assert blocker.status_code == 202
    accepted, refused = [], None
    for i in range(10):  # each ~0.27 MB of base64: the 0.5 MiB budget holds one
        x = np.full((1, 50_000), i, np.float32)
        resp = client.post("/v1/jobs", json=job(digest, x, test={"sleep_s": 0}))
        if resp.status_code == 429:
            refused = resp
            break
        assert resp.status_code == 202, resp.text
        accepted.append(resp.json()["job_id"])
    assert refused is not None and accepted, "no job was refused for the byte budget"
    body = refused.json()
    assert body["error"] == "queue_full" and "budget of 524288 bytes" in body["detail"]
    print(f"\n[queue bytes] {len(accepted)} job(s) queued, then 429: {body['detail']}")
    # one job larger than the whole budget can never fit: 413
    resp = client.post("/v1/jobs", json=job(digest, np.ones((1, 120_000), np.float32)))
    assert resp.status_code == 413 and "queue budget" in resp.json()["detail"]
    for job_id in accepted:
        client.delete(f"/v1/jobs/{job_id}")
    wait_job(client, blocker.json()["job_id"])
    alive(client)


# --------------------------------------------------------------------------- 3: memory bombs


def _constant_of_shape(shape_input: str, inputs: list[Any], inits: list[Any]) -> bytes:
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ConstantOfShape", [shape_input], ["big"], value=value),
        helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0),
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    return model_bytes(helper.make_graph(nodes, "bomb", inputs, [out], inits))


def test_memory_bombs(client: httpx.Client) -> None:
    # static: 100000 x 100000 floats (40 GB), known at upload by shape inference
    shape = numpy_helper.from_array(np.array([100_000, 100_000], np.int64), "shape")
    static = _constant_of_shape("shape", [], [shape])
    resp = upload(client, static)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_model", resp.text
    assert "over the agent's memory budget" in resp.json()["detail"]
    print(f"\n[memory bomb, static] {resp.status_code}: {resp.json()['detail']}")
    # dynamic: the shape is an input, so only the job's address-space limit can stop it
    shp = helper.make_tensor_value_info("shp", TensorProto.INT64, [2])
    dynamic = _constant_of_shape("shp", [shp], [])
    assert upload(client, dynamic).status_code == 201
    body = job(sha(dynamic), np.array([100_000, 100_000], np.int64))
    body["inputs"][0]["name"] = "shp"
    view = wait_job(client, client.post("/v1/jobs", json=body).json()["job_id"])
    assert view["status"] == "oom", view
    print(f"[memory bomb, dynamic] job {view['status']}: {view['error'] or view['measurement']['error']}")
    data = relu_model(3.0)
    upload(client, data)
    after = wait_job(client, client.post("/v1/jobs", json=job(sha(data))).json()["job_id"])
    assert after["status"] in ("ok", "unstable")
    assert alive(client)["limits"]["job_memory_bytes"] == 2048 * 2**20


# --------------------------------------------------------------------------- 5: validator gaps


def _function(domain: str, name: str, nodes: list[Any]) -> onnx.FunctionProto:
    return helper.make_function(domain, name, ["x"], ["y"], nodes, [helper.make_opsetid("", 17)])


def _external(tensor: onnx.TensorProto, location: str) -> onnx.TensorProto:
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def test_validator_walks_functions_attributes_and_subgraphs(client: httpx.Client) -> None:
    att = [helper.make_opsetid("com.attacker", 1)]
    dummy = _function("com.attacker", "Dummy", [helper.make_node("Relu", ["x"], ["y"])])
    ext_const = _external(numpy_helper.from_array(np.ones((1, 4), np.float32), "c"), "#x.bin")
    evil = helper.make_node("Evil", ["x"], ["y"], domain="com.attacker")
    then = helper.make_graph([helper.make_node("Evil", ["x"], ["z"], domain="com.attacker")], "t", [],
                             [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])])  # fmt: skip
    sparse = helper.make_sparse_tensor(
        _external(numpy_helper.from_array(np.ones(1, np.float32), "v"), "/etc/passwd"),
        numpy_helper.from_array(np.zeros(1, np.int64), "i"),
        [1, 4],
    )
    wrap = helper.make_node("Wrap", ["x"], ["y"], domain="local")
    true = helper.make_tensor("b", TensorProto.BOOL, [], [1])
    bad = {
        # a dummy local function in the domain does not make another operator of it acceptable
        "domain hidden by a dummy function": model_bytes(
            helper.make_graph([evil], "g", [X], [Y]), [dummy], extra_opsets=att
        ),
        "custom op inside a function": model_bytes(
            helper.make_graph([wrap], "g", [X], [Y]), [_function("local", "Wrap", [evil])],
            extra_opsets=[helper.make_opsetid("local", 1), *att],
        ),
        "external data in a function's Constant": model_bytes(
            helper.make_graph([wrap], "g", [X], [Y]),
            [_function("local", "Wrap", [helper.make_node("Constant", [], ["c"], value=ext_const),
                                         helper.make_node("Add", ["x", "c"], ["y"])])],
            extra_opsets=[helper.make_opsetid("local", 1)],
        ),
        "external data in a sparse_tensor attribute": model_bytes(
            helper.make_graph([helper.make_node("Constant", [], ["c"], sparse_value=sparse),
                               helper.make_node("Add", ["x", "c"], ["y"])], "g", [X], [Y])
        ),
        "custom op in a subgraph inside a function": model_bytes(
            helper.make_graph([wrap], "g", [X], [Y]),
            [_function("local", "Wrap", [
                helper.make_node("Constant", [], ["cond"], value=true),
                helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=then)])],
            extra_opsets=[helper.make_opsetid("local", 1), *att],
        ),
    }  # fmt: skip
    for what, data in bad.items():
        resp = upload(client, data)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_model", (what, resp.text)
        print(f"\n[validator] {what}: {resp.json()['detail']}", end="")
        assert client.head(f"/v1/models/{sha(data)}").status_code == 404
    print()
    # a model that calls its own function, all standard inside, is fine
    good = model_bytes(
        helper.make_graph([wrap], "g", [X], [Y]),
        [_function("local", "Wrap", [helper.make_node("Relu", ["x"], ["y"])])],
        extra_opsets=[helper.make_opsetid("local", 1)],
    )
    assert upload(client, good).status_code == 201
    view = wait_job(client, client.post("/v1/jobs", json=job(sha(good))).json()["job_id"])
    assert view["status"] in ("ok", "unstable"), view
    alive(client)


# --------------------------------------------------------------------------- 6: bounded values


def test_protocol_values_are_bounded(client: httpx.Client) -> None:
    data = relu_model(4.0)
    upload(client, data)
    for field, value, bound in (("min_samples", 1e12, "100000"), ("max_time_s", 1e9, "900"),
                                ("max_retries", 1e6, "10"), ("warmup_runs", 2.5, None)):  # fmt: skip
        body = job(sha(data))
        body["protocol"] = {**body["protocol"], field: value}
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 400, (field, resp.text)
        detail = resp.json()["detail"]
        assert f"protocol.{field}" in detail and (bound is None or f"bound of {bound}" in detail), detail
        print(f"\n[bounds] {field}={value:g}: {detail}", end="")
    print()
    assert alive(client)["limits"]["protocol"]["min_samples"] == 100_000


# --------------------------------------------------------------------------- 7: Host, Content-Type


def test_host_header_and_content_type(agent: AgentProcess, client: httpx.Client) -> None:
    hosts = [("evil.example", 400), ("evil.example:80", 400), ("localhost", 200),
             (f"127.0.0.1:{agent.port}", 200), ("[::1]:1", 200), ("agent.example", 200)]  # fmt: skip
    for host, status in hosts:
        resp = client.get("/v1/info", headers={"Host": host})
        assert resp.status_code == status, (host, resp.text)
        if status == 400:
            assert resp.json()["error"] == "bad_host"
    data = relu_model(5.0)
    upload(client, data)
    payload = httpx.Request("POST", "/", json=job(sha(data))).content
    for kind in ("text/plain", "application/x-www-form-urlencoded", ""):
        resp = client.post("/v1/jobs", content=payload, headers={"Content-Type": kind})
        assert resp.status_code == 415 and resp.json()["error"] == "unsupported_media_type", kind
    resp = client.post(
        "/v1/jobs", content=payload, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert resp.status_code == 202
    wait_job(client, resp.json()["job_id"])


# --------------------------------------------------------------------------- 8: smaller items


def test_errors_name_models_by_id_not_by_path(agent: AgentProcess, client: httpx.Client) -> None:
    i64 = helper.make_tensor_value_info("i", TensorProto.INT64, [1, 4])
    mixed = model_bytes(helper.make_graph([helper.make_node("Add", ["x", "i"], ["y"])], "g", [X, i64], [Y]))
    assert upload(client, mixed).status_code == 201  # onnx.checker passes; onnxruntime refuses it
    body = job(sha(mixed))
    body["inputs"].append(tensor(np.ones((1, 4), np.int64), "i"))
    view = wait_job(client, client.post("/v1/jobs", json=body).json()["job_id"])
    text = f"{view['error']} {(view['measurement'] or {}).get('error')}"
    assert view["status"] in ("build_error", "invalid_model", "runtime_error"), view
    assert str(agent.root) not in text and "/models/" not in text, text
    assert f"model {sha(mixed)}" in text, text
    print(f"\n[paths] {text[:200]}")


def test_job_processes_do_not_get_the_token(agent: AgentProcess, client: httpx.Client) -> None:
    alive(client)
    children = psutil.Process(agent.pid).children(recursive=True)
    assert children, "no job processes"
    for child in children:
        env = child.environ()
        assert "AUTOTUNE_AGENT_TOKEN" not in env and TOKEN not in env.values(), child.cmdline()
        assert env["AUTOTUNE_AGENT_JOB_MEMORY"] == str(2048 * 2**20)


def test_uploads_in_progress_count_against_the_store(tmp_path: Path) -> None:
    args = ["--max-store-mb", "0.5", "--max-model-mb", "0.4"]
    with (
        AgentProcess(token=TOKEN, root=tmp_path / "a", args=args) as agent,
        httpx.Client(base_url=agent.url, headers=AUTH, timeout=30) as client,
    ):
        first = b"\1" * 300_000
        sent, release = threading.Event(), threading.Event()
        result: dict[str, int] = {}

        def slow() -> Iterator[bytes]:
            yield first[:250_000]
            sent.set()
            release.wait(30)
            yield first[250_000:]

        def put_slowly() -> None:
            with httpx.Client(base_url=agent.url, headers=AUTH, timeout=60) as c:
                result["status"] = c.put(f"/v1/models/{sha(first)}", content=slow()).status_code

        thread = threading.Thread(target=put_slowly)
        thread.start()
        assert sent.wait(30)
        time.sleep(0.5)  # let the agent take in the first chunk
        second = b"\2" * 300_000
        resp = client.put(f"/v1/models/{sha(second)}", content=second)
        release.set()
        thread.join(60)
        assert resp.status_code == 507 and resp.json()["error"] == "insufficient_storage", resp.text
        print(f"\n[store cap] second upload during the first: {resp.status_code} {resp.json()['detail']}")
        assert result["status"] == 400  # not an ONNX model, but it was let in
        assert list((agent.root / "tmp").iterdir()) == []
        alive(client)
    # free disk: an agent that must leave more free space than any disk has takes nothing
    with (
        AgentProcess(token=TOKEN, root=tmp_path / "b", args=["--min-free-mb", str(2**40)]) as agent,
        httpx.Client(base_url=agent.url, headers=AUTH, timeout=30) as client,
    ):
        data = relu_model(6.0)
        resp = upload(client, data)
        assert resp.status_code == 507 and "free" in resp.json()["detail"], resp.text
        alive(client)


def test_store_size_of_an_evicted_model_is_none(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, max_bytes=1000)
    up = store.new_upload()
    up.write(b"x" * 10)
    digest = up.finish()
    store.commit(up, digest)
    assert store.size(digest) == 10
    store.evict(0, keep=set())
    assert store.size(digest) is None  # a HEAD or PUT racing with eviction answers 404 / stores it


# --------------------------------------------------------------------------- 4: TLS


def test_tls_self_signed_pinned(tmp_path: Path) -> None:
    with AgentProcess(token=TOKEN, root=tmp_path / "tls", args=["--self-signed"]) as agent:
        assert agent.url.startswith("https://127.0.0.1:")
        line = next(line for line in agent.output if "fingerprint" in line)
        pin = re.search(r"((?:[0-9A-F]{2}:){31}[0-9A-F]{2})", line)
        assert pin is not None, line
        print(f"\n[tls] {line}")
        model = tmp_path / "m.onnx"
        model.write_bytes(relu_model(7.0))
        x = {"x": np.ones((1, 4), np.float32)}
        device = RemoteDevice([agent.url], token=TOKEN, fingerprint=pin.group(1))
        device.connect()
        m = device.measure(model, x, RuntimeOptions(threads=1), TINY)
        assert m.status in ("ok", "unstable"), m.error
        device.close()
        print(f"[tls] pinned: {m.status}, median {m.median_ms:.3f} ms")
        # the certificate as a CA file works too (its names include 127.0.0.1)
        ca = tmp_path / "tls" / "tls" / "agent-cert.pem"
        device = RemoteDevice([agent.url], token=TOKEN, ca_file=str(ca))
        device.connect()
        assert device.measure(model, x, RuntimeOptions(threads=1), TINY).status in ("ok", "unstable")
        device.close()
        # a wrong pin: refused before the token is sent
        wrong = "AB:" * 31 + "CD"
        device = RemoteDevice([agent.url], token=TOKEN, fingerprint=wrong)
        with pytest.raises(UserError, match="not the pinned fingerprint") as err:
            device.connect()
        print(f"[tls] wrong pin: {err.value}")
        device.close()
        # and no certificate check at all fails against a self-signed agent
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{agent.url}/v1/info", headers=AUTH, timeout=10)
        # plain http to the TLS port is not served
        with pytest.raises(httpx.HTTPError):
            httpx.get(agent.url.replace("https://", "http://") + "/v1/info", headers=AUTH, timeout=10)


# --------------------------------------------------------------------------- issue 25: second audit


def _raise_open_files(need: int) -> None:
    """Let this process (and the agent it starts) open ``need`` files, or skip saying why."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} open files; the hard limit (ulimit -Hn) is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _closed(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (poll: these tests hold descriptors past select's 1024)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    if not poller.poll(0):
        return False
    timeout = sock.gettimeout()
    sock.setblocking(False)  # a socket with a timeout would wait in recv
    try:
        while chunk := sock.recv(65536):
            del chunk  # an answer first (a 401, say), then the end
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True
    finally:
        sock.settimeout(timeout)
    return True


def _wait_closed(socks: list[socket.socket], limit: float) -> float | None:
    """Seconds until the agent closed every socket, None if some are still open after ``limit``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if all(_closed(s) for s in socks):
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def _loopback_connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def test_the_owner_is_answered_past_tokenless_and_idle_floods(tmp_path: Path) -> None:
    """Items 1 and 2: a refused connection is closed; the per-address and global caps shed the
    oldest idle connection without the token, not the owner's new one."""
    _raise_open_files(4096)  # 1,312 sockets here and as many in the agent
    with AgentProcess(token=TOKEN, root=tmp_path / "root") as agent:  # default caps: 32, 256
        port = agent.port
        tokenless = [_loopback_connect(port) for _ in range(32)]  # the owner's address
        for s in tokenless:
            s.sendall(b"GET /v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # keep-alive by default
        for s in tokenless:
            assert s.recv(12) == b"HTTP/1.1 401"
        # the agent closes a connection after its 401 (it used to keep it for 30 s, per request)
        closed_after = _wait_closed(tokenless, 5.0)
        assert closed_after is not None, "tokenless connections kept open after their 401"
        for s in tokenless:
            s.close()
        # the client reconnects at once: 32 idle tokenless connections from the owner's address
        socks = [_loopback_connect(port) for _ in range(32)]
        # and 1,280 idle sockets from 40 other loopback addresses
        for a in range(2, 42):
            socks += [_loopback_connect(port, f"127.0.0.{a}") for _ in range(32)]
        t0 = time.monotonic()
        with httpx.Client(base_url=agent.url, headers=AUTH, timeout=10) as owner:
            resp = owner.get("/v1/info")
        answered = time.monotonic() - t0
        proc = psutil.Process(agent.pid)
        held = sum(1 for c in proc.net_connections("tcp") if c.raddr and c.laddr.port == port)
        for s in socks:
            s.close()
        assert resp.status_code == 200, resp.text
        # the bound, with room: 0.2-0.3 s on a 2-core VM under a load of 9
        assert answered < 2.0, answered
        limits = resp.json()["limits"]
        print(f"\n[floods] 32 tokenless connections closed {closed_after:.2f} s after their 401s; with "
              f"32 + 1,280 idle sockets open, an authenticated GET /v1/info answered in "
              f"{answered * 1e3:.0f} ms; "
              f"the agent held {held} connections (caps: {limits['max_connections_per_client']} per "
              f"address, {limits['max_unauthenticated_connections']} without the token)")  # fmt: skip
        assert held <= limits["max_unauthenticated_connections"] + 1


def test_a_tls_handshake_that_never_finishes_is_closed(tmp_path: Path) -> None:
    """Item 2: the handshake is bounded by the header timeout (asyncio's default was 60 s)."""
    args = ["--self-signed", "--header-timeout", "2"]
    with AgentProcess(token=TOKEN, root=tmp_path / "tls", args=args) as agent:
        s = _loopback_connect(agent.port)
        s.sendall(b"\x16\x03\x01")  # the start of a TLS record, never finished
        took = _wait_closed([s], 20.0)
        s.close()
        assert took is not None, "a stalled TLS handshake kept its socket for over 20 s"
        print(f"\n[tls handshake] closed after {took:.1f} s (header timeout 2 s)")
        m = tmp_path / "m.onnx"
        m.write_bytes(relu_model(11.0))
        pin = re.search(r"((?:[0-9A-F]{2}:){31}[0-9A-F]{2})", " ".join(agent.output))
        assert pin is not None
        device = RemoteDevice([agent.url], token=TOKEN, fingerprint=pin.group(1))
        device.connect()  # a real client still gets through
        device.close()


def test_a_body_trickled_byte_by_byte_is_cut_off(tmp_path: Path) -> None:
    """Item 2: an authenticated body at 1 byte/s is closed by the body-progress timeout."""
    with (
        AgentProcess(token=TOKEN, root=tmp_path / "root", args=["--body-timeout", "2"]) as agent,
        httpx.Client(base_url=agent.url, headers=AUTH, timeout=30) as client,
    ):
        s = _loopback_connect(agent.port)
        head = (f"PUT /v1/models/{'a' * 64} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n")  # fmt: skip
        s.sendall(head.encode())
        t0, sent = time.monotonic(), 0
        while time.monotonic() - t0 < 20 and not _closed(s):
            try:
                s.sendall(b"x")
            except OSError:
                break
            sent += 1
            time.sleep(1.0)
        took = time.monotonic() - t0
        closed = _closed(s) or took < 20
        s.close()
        assert closed, "a body sent at 1 byte/s was still open after 20 s"
        print(f"\n[slow body] closed after {took:.1f} s and {sent} bytes (body timeout 2 s)")
        alive(client)
        deadline = time.monotonic() + 10
        while list((agent.root / "tmp").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((agent.root / "tmp").iterdir()) == []  # the partial upload is gone


def test_runtime_options_are_checked_before_queueing(agent: AgentProcess, client: httpx.Client) -> None:
    """Item 3: every option against RuntimeOptions' types; they used to fail at run time."""
    data = relu_model(12.0)
    upload(client, data)
    cores = sorted(psutil.Process(agent.pid).cpu_affinity())
    bad: list[tuple[dict[str, Any], str]] = [
           ({"graph_optimization": "bogus"}, "graph_optimization must be one of"),
           ({"affinity": [99999]}, "options.affinity"), ({"affinity": [cores[0], cores[0]]}, "distinct"),
           ({"affinity": []}, "options.affinity"), ({"affinity": ["0"]}, "options.affinity"),
           ({"affinity": 0}, "options.affinity"), ({"precision": "fp64"}, "precision must be one of"),
           ({"execution_mode": True}, "execution_mode"), ({"cudnn_conv_algo_search": "FAST"}, "cudnn"),
           ({"threads": 10**6}, "threads must be")]  # fmt: skip
    for options, needle in bad:
        body = job(sha(data))
        body["options"] = {**body["options"], **options}
        resp = client.post("/v1/jobs", json=body)
        assert resp.status_code == 400, (options, resp.status_code, resp.text)
        assert needle in resp.json()["detail"], resp.text
        print(f"\n[options] {options}: {resp.json()['detail']}", end="")
    print()
    body = job(sha(data))
    body["options"] = {"threads": 1, "affinity": [cores[-1]], "graph_optimization": "basic"}
    view = wait_job(client, client.post("/v1/jobs", json=body).json()["job_id"])
    assert view["status"] in ("ok", "unstable"), view
    assert view["measurement"]["runtime"]["affinity"] == [cores[-1]]
    assert alive(client)["limits"]["runtime"]["affinity"] == cores


# the second agent: default limits, its own TMPDIR, HOME and XDG cache (items 3 to 6)


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    base = tmp_path_factory.mktemp("isolated")
    for d in ("tmp", "home", "xdg"):
        (base / d).mkdir()
    # the old, predictable lock path, with a link planted by "another user"
    (base / "tmp" / "autotune-device-cpu.lock").symlink_to(base / "victim")
    env = {"TMPDIR": str(base / "tmp"), "HOME": str(base / "home"), "XDG_CACHE_HOME": str(base / "xdg"),
           "AUTOTUNE_AGENT_TEST_HOOKS": "1"}  # fmt: skip
    proc = AgentProcess(token=TOKEN, root=base / "root", env=env)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AUTOTUNE_LOCK_DIR", raising=False)  # the default lock directory, not a configured one
        proc.launch()
    with proc:
        yield proc


@pytest.fixture
def iclient(isolated: AgentProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=isolated.url, headers=AUTH, timeout=120) as c:
        yield c


def test_oversized_options_are_refused_with_little_memory(
    isolated: AgentProcess, iclient: httpx.Client
) -> None:
    """Item 3: a 20-million-entry affinity list (40 MB body) is refused before it is parsed."""
    data = relu_model(13.0)
    upload(iclient, data)
    proc = psutil.Process(isolated.pid)
    before = proc.memory_info().rss
    peak, stop = [before], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.append(proc.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    body = (b'{"model_sha256": "' + sha(data).encode() + b'", "backend": "ort-cpu", '
            b'"options": {"threads": 1, "affinity": [' + b",".join([b"0"] * 20_000_000) + b"]}}")  # fmt: skip
    try:
        t0 = time.monotonic()
        resp = iclient.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
        took = time.monotonic() - t0
        time.sleep(0.3)  # what the agent does right after answering counts too
    finally:
        stop.set()
        sampler.join()
    t0 = time.monotonic()
    alive(iclient)
    info_s = time.monotonic() - t0
    print(f"\n[options bomb] {len(body) / 2**20:.0f} MB body: {resp.status_code} in {took:.1f} s "
          f"({resp.text[:200]}); agent RSS {before / 2**20:.0f} MB before, peak "
          f"{max(peak) / 2**20:.0f} MB; /v1/info then {info_s * 1e3:.0f} ms")  # fmt: skip
    assert resp.status_code == 400 and "JSON values" in resp.json()["detail"], resp.text[:300]
    assert max(peak) < 150 * 2**20


def test_default_job_memory_is_a_share_of_available_memory(iclient: httpx.Client) -> None:
    """Item 4: not the machine's total RAM."""
    budget = alive(iclient)["limits"]["job_memory_bytes"]
    assert 0 < budget <= 0.75 * psutil.virtual_memory().total, budget


def test_device_lock_is_private_not_followed_and_times_out(
    isolated: AgentProcess, iclient: httpx.Client
) -> None:
    """Item 5: the lock is in a private per-user directory, opened without following links,
    and a job waiting for it ends with that reason."""
    base = isolated.root.parent
    data = relu_model(14.0)
    upload(iclient, data)
    view = wait_job(iclient, iclient.post("/v1/jobs", json=job(sha(data))).json()["job_id"])
    assert view["status"] in ("ok", "unstable"), view
    assert not (base / "victim").exists(), "the agent followed a link planted at the shared lock path"
    private = base / "tmp" / f"autotune-{os.getuid()}"
    st = os.lstat(private)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077 == 0
    lock = private / "device-cpu.lock"
    # a link planted in the directory itself is not followed either
    lock.unlink()
    lock.symlink_to(base / "victim2")
    view = wait_job(iclient, iclient.post("/v1/jobs", json=job(sha(data), np.full((1, 4), 2, np.float32)))
                    .json()["job_id"])  # fmt: skip
    assert view["status"] not in ("ok", "unstable") and not (base / "victim2").exists(), view
    lock.unlink()
    # held by another process: the job ends as timeout saying so, after half its measure timeout
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        body = job(sha(data), np.full((1, 4), 3, np.float32), timeouts={"measure_s": 6})
        t0 = time.monotonic()
        view = wait_job(iclient, iclient.post("/v1/jobs", json=body).json()["job_id"])
        took = time.monotonic() - t0
    why = view["error"] or (view["measurement"] or {}).get("error") or ""
    assert view["status"] == "timeout" and "busy" in why, view
    print(f"\n[device lock] {private} mode {stat.S_IMODE(st.st_mode):o}; held elsewhere: "
          f"{view['status']} after {took:.1f} s: {why}")  # fmt: skip
    view = wait_job(iclient, iclient.post("/v1/jobs", json=job(sha(data), np.full((1, 4), 4, np.float32)))
                    .json()["job_id"])  # fmt: skip
    assert view["status"] in ("ok", "unstable"), view


def test_job_processes_write_under_the_work_directory(isolated: AgentProcess, iclient: httpx.Client) -> None:
    """Item 6: what runtimes write under HOME (onnxruntime's ~/.cache/Microsoft/DeveloperTools,
    on the builds that write it) lands in the agent's work dir, never the user's home."""
    data = relu_model(15.0)
    upload(iclient, data)
    view = wait_job(iclient, iclient.post("/v1/jobs", json=job(sha(data))).json()["job_id"])
    assert view["status"] in ("ok", "unstable"), view
    base, work = isolated.root.parent, (isolated.root / "work").resolve()
    assert not (base / "home" / ".cache").exists() and not (base / "xdg" / "Microsoft").exists()
    children = psutil.Process(isolated.pid).children(recursive=True)
    assert children, "the agent keeps its job processes alive between jobs"
    for child in children:
        env = child.environ()
        assert env["HOME"] == str(work), child.cmdline()
        assert not any(k in env for k in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")), env
    # a job process resolves ~ to the work dir: what it writes there stays there
    probe = subprocess.run([sys.executable, "-c", "import os; print(os.path.expanduser('~'))"],
                           env=children[0].environ(), capture_output=True, text=True, check=True)  # fmt: skip
    assert probe.stdout.strip() == str(work)


def _bomb_nodes(prefix: str, out: str) -> list[onnx.NodeProto]:
    """A 38 GiB ConstantOfShape, summed to a scalar and added to x."""
    shape = helper.make_tensor(prefix + "s", TensorProto.INT64, [2], [100_000, 100_000])
    one = helper.make_tensor(prefix + "v", TensorProto.FLOAT, [1], [1.0])
    return [helper.make_node("Constant", [], [prefix + "shape"], value=shape),
            helper.make_node("ConstantOfShape", [prefix + "shape"], [prefix + "big"], value=one),
            helper.make_node("ReduceSum", [prefix + "big"], [prefix + "r"], keepdims=0),
            helper.make_node("Add", ["x", prefix + "r"], [out])]  # fmt: skip


def _if(then: onnx.GraphProto, cond: bool = False) -> list[onnx.NodeProto]:
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["z2"])], "other", [],
                              [helper.make_tensor_value_info("z2", TensorProto.FLOAT, [1, 4])])  # fmt: skip
    flag = helper.make_tensor("c", TensorProto.BOOL, [], [cond])
    return [helper.make_node("Constant", [], ["cond"], value=flag),
            helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]  # fmt: skip


def _nested_bombs() -> dict[str, bytes]:
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])
    branch = helper.make_graph(_bomb_nodes("b", "z"), "branch", [], [z])
    body = helper.make_graph(
        [*_bomb_nodes("b", "z"), helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), z],
    )  # fmt: skip
    n = helper.make_tensor("n", TensorProto.INT64, [], [1])
    t = helper.make_tensor("t", TensorProto.BOOL, [], [1])
    loop = [helper.make_node("Constant", [], ["n"], value=n),
            helper.make_node("Constant", [], ["t"], value=t),
            helper.make_node("Loop", ["n", "t"], ["zs"], body=body),
            helper.make_node("ReduceSum", ["zs", "axis0"], ["y"], keepdims=0)]  # fmt: skip
    axis0 = numpy_helper.from_array(np.array([0], np.int64), "axis0")
    bomb_fn = helper.make_function(
        "local", "Bomb", ["x"], ["y"], _bomb_nodes("b", "y"), [helper.make_opsetid("", 17)]
    )
    shape_f = helper.make_tensor("sf", TensorProto.FLOAT, [2], [100_000.0, 100_000.0])
    cast = [helper.make_node("Constant", [], ["shape_f"], value=shape_f),
            helper.make_node("Cast", ["shape_f"], ["shape"], to=TensorProto.INT64),
            *_bomb_nodes("b", "y")[1:]]  # fmt: skip
    cast[2].input[0] = "shape"  # the ConstantOfShape reads the cast shape
    sparse_graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["c"], ["r"], keepdims=0), helper.make_node("Add", ["x", "r"], ["y"])],
        "g", [X], [Y],
    )  # fmt: skip
    sparse = helper.make_sparse_tensor(  # one value; 30000 x 30000 floats (3.4 GiB) once dense
        numpy_helper.from_array(np.ones(1, np.float32), "c"),
        numpy_helper.from_array(np.zeros(1, np.int64), "ci"),
        [30_000, 30_000],
    )  # fmt: skip
    sparse_graph.sparse_initializer.append(sparse)
    relu = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [X], [Y])

    def training(graph: onnx.GraphProto) -> bytes:
        model = onnx.load_from_string(model_bytes(relu))
        model.training_info.add().initialization.CopyFrom(graph)
        return model.SerializeToString()

    w2 = helper.make_tensor_value_info("w2", TensorProto.FLOAT, [1, 4])
    external = _external(numpy_helper.from_array(np.ones((1, 4), np.float32), "w"), "/etc/passwd")
    return {
        "If branch": model_bytes(helper.make_graph(_if(branch), "g", [X], [Y])),
        "Loop body": model_bytes(helper.make_graph(loop, "g", [X], [Y], [axis0])),
        "local function": model_bytes(
            helper.make_graph([helper.make_node("Bomb", ["x"], ["y"], domain="local")], "g", [X], [Y]),
            [bomb_fn],
            extra_opsets=[helper.make_opsetid("local", 1)],
        ),
        "through Cast": model_bytes(helper.make_graph(cast, "g", [X], [Y])),
        "sparse initializer": model_bytes(sparse_graph),
        "external data in training_info": training(
            helper.make_graph([helper.make_node("Identity", ["w"], ["w2"])], "init", [], [w2], [external])
        ),
        "custom op in training_info": training(
            helper.make_graph([helper.make_node("Evil", [], ["w2"], domain="com.attacker")], "init", [], [w2])
        ),
    }  # fmt: skip


def test_nested_memory_bombs_are_refused_at_upload(client: httpx.Client) -> None:
    """Item 4: every graph, function and training_info is walked; sparse tensors count dense."""
    reasons = {"external data": "external data", "custom op": "custom domain"}
    for what, data in _nested_bombs().items():
        resp = upload(client, data)
        answer = resp.json()
        assert resp.status_code == 400 and answer["error"] == "invalid_model", (what, len(data), answer)
        detail = answer["detail"]
        needle = next((v for k, v in reasons.items() if what.startswith(k)), "over the agent's memory budget")
        assert needle in detail, (what, detail)
        assert client.head(f"/v1/models/{sha(data)}").status_code == 404
        print(f"\n[nested bomb] {what} ({len(data)} bytes): {detail}", end="")
    print()
    # the same shapes, small, are fine: an If whose branch makes a 2 x 4 tensor from a Cast shape
    shape_f = helper.make_tensor("sf", TensorProto.FLOAT, [2], [1.0, 4.0])
    one = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    small = helper.make_graph(
        [helper.make_node("Constant", [], ["shape_f"], value=shape_f),
         helper.make_node("Cast", ["shape_f"], ["shape"], to=TensorProto.INT64),
         helper.make_node("ConstantOfShape", ["shape"], ["ones"], value=one),
         helper.make_node("Add", ["x", "ones"], ["z"])],
        "branch", [], [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    good = model_bytes(helper.make_graph(_if(small, cond=True), "g", [X], [Y]))
    assert upload(client, good).status_code == 201
    view = wait_job(client, client.post("/v1/jobs", json=job(sha(good))).json()["job_id"])
    assert view["status"] in ("ok", "unstable"), view
    alive(client)
