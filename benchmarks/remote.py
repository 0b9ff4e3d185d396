"""Does a remote agent measure what the local backend measures? And is each model sent once?

Starts ``autotune agent`` on loopback, then measures the same ONNX models with the local
``ort-cpu`` backend and through the agent (``remote`` backend), alternating local and remote
for several rounds under the full default protocol. Per model: median of the round medians
on each side and their ratio (target: within 1.10 either way). Each model is measured
``rounds`` times through the agent, yet must be uploaded once: uploads == distinct models.
No torch needed. Usage::

    python benchmarks/remote.py                     # 3 models x 5 rounds, default protocol
    python benchmarks/remote.py --rounds 5 --quick  # Protocol.quick() (noisier)
    python benchmarks/remote.py --memory            # agent memory with jobs queued (issue 9, finding 2)

Exit code 1 when a check fails. The figures depend on how quiet the machine is; the load
average is printed beside them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from autotune.agent.process import AgentProcess
from autotune.devices import OrtCpuDevice, Protocol, RuntimeOptions
from autotune.devices.remote import RemoteDevice

TOKEN = "benchmark-token-" + os.urandom(8).hex()
#: (name, width, layers): MLPs whose single-thread latency is roughly 0.1 ms to 2 ms
MODELS = [("mlp-256x4", 256, 4), ("mlp-512x6", 512, 6), ("mlp-1024x4", 1024, 4)]


def mlp(path: Path, width: int, layers: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, width])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def queued_memory(jobs: int = 4, mb: float = 7.8) -> int:
    """The agent's own memory (RSS, MB) idle, then with ``jobs`` jobs of ``mb`` MB of inputs each
    queued behind a sleeping one. Each queued job should cost about its base64 size, once."""
    import base64

    import psutil

    auth = {"Authorization": f"Bearer {TOKEN}"}
    n = int(mb * 2**20 / 4)
    with tempfile.TemporaryDirectory(prefix="autotune-bench-mem-") as tmp:
        path = mlp(Path(tmp) / "m.onnx", 64, 1)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        with (
            AgentProcess(
                token=TOKEN, root=Path(tmp) / "agent", env={"AUTOTUNE_AGENT_TEST_HOOKS": "1"}
            ) as agent,
            httpx.Client(base_url=agent.url, headers=auth, timeout=60) as client,
        ):
            client.put(f"/v1/models/{digest}", content=data).raise_for_status()
            rss = lambda: psutil.Process(agent.pid).memory_info().rss / 2**20  # noqa: E731
            idle = rss()
            x = base64.b64encode(np.zeros((8, 64), np.float32).tobytes()).decode()
            body = {"model_sha256": digest, "inputs": [{"name": "x", "dtype": "float32", "shape": [8, 64],
                    "data": x}], "test": {"sleep_s": 30}}  # fmt: skip
            client.post("/v1/jobs", json=body).raise_for_status()
            ids = []
            for i in range(jobs):
                big = base64.b64encode(np.full(n, i, np.float32).tobytes()).decode()
                body = {"model_sha256": digest, "inputs": [{"name": "x", "dtype": "float32", "shape": [n],
                        "data": big}]}  # fmt: skip
                resp = client.post("/v1/jobs", json=body)
                resp.raise_for_status()
                ids.append(resp.json()["job_id"])
            time.sleep(1.0)
            queued = rss()
            for job_id in ids:
                client.delete(f"/v1/jobs/{job_id}")
    held = jobs * len(big) / 2**20
    print(f"agent RSS idle {idle:.0f} MB; with {jobs} x {mb:g} MB jobs queued {queued:.0f} MB "
          f"(+{queued - idle:.0f} MB; their base64 inputs are {held:.0f} MB)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="local/remote pairs per model (default: 5)")
    ap.add_argument("--quick", action="store_true", help="Protocol.quick() instead of the default protocol")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-ratio", type=float, default=1.10)
    ap.add_argument("--memory", action="store_true", help="only the queued-jobs memory figure")
    args = ap.parse_args(argv)
    if args.memory:
        return queued_memory()

    protocol = Protocol.quick() if args.quick else Protocol()
    runtime = RuntimeOptions(threads=args.threads)
    local = OrtCpuDevice()
    rows = []
    with tempfile.TemporaryDirectory(prefix="autotune-bench-remote-") as tmp:
        paths = {name: mlp(Path(tmp) / f"{name}.onnx", w, n) for name, w, n in MODELS}
        with AgentProcess(token=TOKEN, root=Path(tmp) / "agent") as agent:
            remote = RemoteDevice([agent.url], token=TOKEN)
            remote.connect()
            for name, width, _ in MODELS:
                inputs = {"x": np.random.default_rng(1).standard_normal((8, width)).astype(np.float32)}
                loc, rem, rem_wall, loc_wall, statuses = [], [], [], [], []
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    m = local.measure(paths[name], inputs, runtime, protocol)
                    loc_wall.append(time.perf_counter() - t0)
                    loc.append(m.median_ms)
                    statuses.append(m.status)
                    t0 = time.perf_counter()
                    r = remote.measure(paths[name], inputs, runtime, protocol)
                    rem_wall.append(time.perf_counter() - t0)
                    rem.append(r.median_ms)
                    statuses.append(r.status)
                    if not r.usable:
                        print(f"{name}: remote {r.status}: {r.error}", file=sys.stderr)
                lm, rm = statistics.median(loc), statistics.median(rem)
                rows.append({
                    "model": name, "local_ms": round(lm, 4), "remote_ms": round(rm, 4),
                    "ratio": round(rm / lm, 3), "local_rounds_ms": [round(v, 4) for v in loc],
                    "remote_rounds_ms": [round(v, 4) for v in rem],
                    "local_wall_s": round(statistics.median(loc_wall), 2),
                    "remote_wall_s": round(statistics.median(rem_wall), 2),
                    "statuses": sorted(set(statuses)),
                })  # fmt: skip
            auth = {"Authorization": f"Bearer {TOKEN}"}
            agent_info = httpx.get(f"{agent.url}/v1/info", headers=auth, timeout=30).json()
            remote.close()

    print(f"protocol: {'quick' if args.quick else 'default'}; threads {args.threads}; rounds {args.rounds}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    print(f"{'model':<12} {'local ms':>9} {'remote ms':>10} {'ratio':>6} {'local s':>8} {'remote s':>9}")
    for r in rows:
        print(f"{r['model']:<12} {r['local_ms']:>9.4f} {r['remote_ms']:>10.4f} {r['ratio']:>6.3f} "
              f"{r['local_wall_s']:>8.2f} {r['remote_wall_s']:>9.2f}")  # fmt: skip
    distinct = len(MODELS)
    uploads = remote.stats["uploads"]
    counted = agent_info["health"]["uploads"]
    jobs = remote.stats["jobs"]
    print(f"remote jobs {jobs}, uploads {uploads} (agent counted {counted}), distinct models {distinct}")
    worst = max(max(r["ratio"], 1 / r["ratio"]) for r in rows)
    ok_ratio = worst <= args.max_ratio
    ok_uploads = uploads == distinct == agent_info["health"]["uploads"]
    print(f"worst ratio {worst:.3f} (limit {args.max_ratio}): {'PASS' if ok_ratio else 'FAIL'}; "
          f"uploads == distinct models: {'PASS' if ok_uploads else 'FAIL'}")  # fmt: skip
    print(json.dumps({"rows": rows, "uploads": uploads, "distinct_models": distinct, "worst_ratio": worst}))
    return 0 if ok_ratio and ok_uploads else 1


if __name__ == "__main__":
    sys.exit(main())
