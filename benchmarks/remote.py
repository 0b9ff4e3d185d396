"""Does a remote agent measure what the local backend measures? And is each model sent once?

Starts ``autotune agent`` on loopback, then measures the same ONNX models with the local
``ort-cpu`` backend and through the agent (``remote`` backend), alternating local and remote
for several rounds under the full default protocol. Per model: median of the round medians
on each side and their ratio (target: within 1.10 either way). Each model is measured
``rounds`` times through the agent, yet must be uploaded once: uploads == distinct models.
No torch needed. Usage::

    python benchmarks/remote.py                     # 3 models x 5 rounds, default protocol
    python benchmarks/remote.py --rounds 5 --quick  # Protocol.quick() (noisier)

Exit code 1 when a check fails. The figures depend on how quiet the machine is; the load
average is printed beside them.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="local/remote pairs per model (default: 5)")
    ap.add_argument("--quick", action="store_true", help="Protocol.quick() instead of the default protocol")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-ratio", type=float, default=1.10)
    args = ap.parse_args(argv)

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
