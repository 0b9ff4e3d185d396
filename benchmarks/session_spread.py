"""How far apart do fresh ``autotune measure A --reference B`` runs read? (issue 23's checks)

Runs ``--runs`` fresh processes of ``autotune measure A --reference B --device cpu --threads 1
--json`` (``--sessions N`` passes through; default: the default protocol) one after another and
prints each ratio with its interval, the spread of the ratios (max/min - 1) and of the absolute
medians, and the load. ``--hog`` toggles a CPU hog on every core (3 s on, 2 s off; it stops by
itself) while each run measures.

Usage::

    python benchmarks/session_spread.py A.onnx B.onnx                  # quiet host, 5 runs
    python benchmarks/session_spread.py A.onnx B.onnx --hog            # under a toggling hog
    python benchmarks/session_spread.py A.onnx B.onnx --sessions 1     # the single-session protocol
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HOG = r"""
import sys, time
on, off, end = float(sys.argv[1]), float(sys.argv[2]), time.time() + float(sys.argv[3])
while time.time() < end:
    t = time.time() + on
    while time.time() < min(t, end):
        pass
    time.sleep(max(0.0, min(off, end - time.time())))
"""


def measure(a: Path, b: Path, sessions: int | None, hog: bool) -> dict[str, object]:
    cmd = [sys.executable, "-m", "autotune", "measure", str(a), "--reference", str(b)]
    cmd += ["--device", "cpu", "--threads", "1", "--json"] + (
        ["--sessions", str(sessions)] if sessions else []
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    hogs = (
        [subprocess.Popen([sys.executable, "-c", HOG, "3", "2", "90"]) for _ in range(os.cpu_count() or 2)]
        if hog
        else []
    )
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    if out.returncode:
        raise SystemExit(out.stderr[-800:])
    d = json.loads(out.stdout)
    extra = d.get("extra", {})
    return {
        "ratio": d["ratio"],
        "ci": d["ratio_ci"],
        "within": extra.get("ratio_ci_within"),
        "sessions": len(extra.get("session_ratios") or []) or 1,
        "status": d["status"],
        "median_ms": d["median_ms"],
        "reference_median_ms": d["reference_median_ms"],
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--sessions", type=int, help="passed to autotune measure (default: its default)")
    p.add_argument("--hog", action="store_true", help="a CPU hog toggling 3 s on / 2 s off on every core")
    args = p.parse_args()
    load0 = os.getloadavg()[0]
    rows = []
    for _ in range(args.runs):
        rows.append(measure(args.a, args.b, args.sessions, args.hog))
        r = rows[-1]
        ci = r["ci"]
        print(
            f"  ratio {r['ratio']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}] "  # type: ignore[index]
            f"over {r['sessions']} session(s), {r['status']}, "
            f"in-window medians {r['median_ms']:.4f} / {r['reference_median_ms']:.4f} ms, {r['wall_s']} s",
            flush=True,
        )
        time.sleep(2)  # runs start at different phases of the hog
    spread = {
        k: max(float(r[k]) for r in rows) / min(float(r[k]) for r in rows) - 1  # type: ignore[arg-type]
        for k in ("ratio", "median_ms", "reference_median_ms")
    }
    print(
        f"{args.a.name} / {args.b.name}, {args.runs} fresh runs"
        f"{' under a toggling hog' if args.hog else ''}: "
        f"ratio spread {spread['ratio']:.1%} (target <= 3%); in-window medians {spread['median_ms']:.1%} / "
        f"{spread['reference_median_ms']:.1%}; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
