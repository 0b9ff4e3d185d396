"""The model zoo (tests/zoo_models.py): every model searched, and its floors measured.

Per model, in a process of its own (one that runs out of memory fails alone; its address space
is capped at ``--max-memory-gb``), random weights, 64x64 inputs (16 token ids for text), the
``cpu`` profile, one thread:

1. discovery with the default preset: which knobs are searched and in how many layers (blocks,
   for depth), and any layer lost between torch and ONNX;
2. ``autotune.search(budget="50%", trials=6)``: trials completed and failed, and whether an
   exception reached the caller;
3. the floors: the space's most aggressive configurations (narrowest width, every droppable
   block dropped; with the fewest bits, and in fp32, as int8 does not pay on every small layer),
   and the same with every block kept, each built and timed interleaved with the unmodified model:
   the latency ratio. "≤50%" says whether the faster floor reached 0.5, without and with depth.

Latency is paired (docs/measurement.md), so the ratios hold on a loaded host; absolute
milliseconds do not. Usage::

    python benchmarks/zoo.py                      # every model: about 3-6 min each on 2 cores
    python benchmarks/zoo.py --models resnet18,deit_tiny_patch16_224 --json zoo.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from zoo_models import BY_NAME, ZOO, describe_knobs, searched_knobs, zoo_task  # noqa: E402

import autotune  # noqa: E402
from autotune._util import error_line  # noqa: E402
from autotune.build._builder import ArtifactBuilder  # noqa: E402
from autotune.devices import OrtCpuDevice, Protocol, Reference  # noqa: E402
from autotune.measure import Measurer  # noqa: E402
from autotune.space._profiles import load_profile  # noqa: E402
from autotune.space._space import Candidate, SearchSpace, build_space, load_preset  # noqa: E402


def floors(task: Any, space: SearchSpace, workdir: Path, protocol: Protocol) -> dict[str, float | None]:
    """Latency ratio to the unmodified model of the space's floors (:meth:`SearchSpace.floor`,
    with the fewest bits and in fp32), with depth and with every block kept."""

    def no_depth(params: dict[str, Any]) -> dict[str, Any]:
        return {k: ("keep" if k.endswith(":depth") else v) for k, v in params.items()}

    variants = {
        "floor": space.floor(),
        "floor_fp32": space.floor(fp32=True),
        "floor_no_depth": no_depth(space.floor()),
        "floor_fp32_no_depth": no_depth(space.floor(fp32=True)),
    }
    builder = ArtifactBuilder(task, space, workdir / "artifacts", keep_unrecovered=False)
    reference = builder.build(Candidate(layers={}))
    inputs = task.example_feeds()
    measurer = Measurer(
        OrtCpuDevice(), protocol, cache_dir=None, canary_every=0, reference=Reference(reference.path, inputs)
    )
    out: dict[str, float | None] = {}
    for name, p in variants.items():
        candidate = space.candidate(p)
        try:
            artifact = builder.build(candidate)
            m = measurer.measure(artifact.path, inputs, candidate.runtime)
            out[name] = m.ratio if m.usable else None
        except Exception as exc:  # noqa: BLE001 - a floor that fails is a row, not a crash
            print(f"  {name}: {error_line(exc)}", file=sys.stderr)
            out[name] = None
    return out


def lowest(row: dict[str, Any], *keys: str) -> float | None:
    """The fastest of the floors measured under ``keys``."""
    got = [row[k] for k in keys if row.get(k) is not None]
    return min(got) if got else None


WITH_DEPTH = ("floor", "floor_fp32")
WITHOUT_DEPTH = ("floor_no_depth", "floor_fp32_no_depth")


def run_one(name: str, trials: int, budget: str, quick: bool) -> dict[str, Any]:
    entry = BY_NAME[name]
    protocol = Protocol.quick() if quick else Protocol()
    row: dict[str, Any] = {"model": name, "family": entry.family}
    t0 = time.time()
    task = zoo_task(entry)
    row["params_m"] = round(sum(p.numel() for p in task.model.parameters()) / 1e6, 2)
    space = build_space(task, load_preset(None), load_profile("cpu"))
    row["layers"] = sum(layer.op is not None for layer in space.layers)
    row["knobs"] = searched_knobs(space)
    row["lost"] = [n for n in space.notes if "layers not searched" in n]
    row["notes"] = [n for n in space.notes if n.startswith(("depth", "width not searched"))]
    row["discovery_s"] = round(time.time() - t0, 1)
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.time()
        try:
            result = autotune.search(
                task,
                budget=budget,
                device="cpu",
                trials=trials,
                out_dir=Path(tmp) / "runs",
                protocol=protocol,
                progress=False,
                report=False,
            )
            row["trials"] = len(result.trials)
            row["failed"] = [f"{f.stage}: {f.reason}" for f in result.failures]
            row["infeasible"] = result.meta.infeasible is not None
            best = result.best
            row["best"] = (
                None if best is None else {"accuracy": best.accuracy, "config": best.candidate.describe()}
            )
            row["search"] = "ok"
        except Exception as exc:  # noqa: BLE001 - the done-when: no exception reaches the caller
            row["search"] = f"EXCEPTION {error_line(exc)}"
            traceback.print_exc()
        row["search_s"] = round(time.time() - t1, 1)
        row.update(floors(task, space, Path(tmp), protocol))
    row["wall_s"] = round(time.time() - t0, 1)
    return row


def _limit_memory(gb: float) -> None:
    limit = int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def child(args: argparse.Namespace) -> None:
    _limit_memory(args.max_memory_gb)
    row = run_one(args.one, args.trials, args.budget, args.quick)
    Path(args.out).write_text(json.dumps(row))


def _ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | family | layers | knobs searched (layers; blocks) | trials ok / failed "
        "| floor w/o depth (int8 · fp32) | floor with depth (int8 · fp32) | ≤50% w/o · with |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | :---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('family', '')} | | **{r['error']}** | | | | |")
            continue
        trials = (
            f"{r['trials']} / {len(r['failed'])}" if r.get("search") == "ok" else f"**{r.get('search')}**"
        )
        without, with_depth = lowest(r, *WITHOUT_DEPTH), lowest(r, *WITH_DEPTH)

        def reached(v: float | None) -> str:
            return "yes" if v is not None and v <= 0.5 else "no"

        lines.append(
            f"| {r['model']} | {r['family']} | {r['layers']} | {describe_knobs(r['knobs'])} | {trials} "
            f"| {_ratio(r.get('floor_no_depth'))} · {_ratio(r.get('floor_fp32_no_depth'))} "
            f"| {_ratio(r.get('floor'))} · {_ratio(r.get('floor_fp32'))} "
            f"| {reached(without)} · {reached(with_depth)} |"
        )
    return lines


def _machine() -> str:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return f"{time.strftime('%Y-%m-%d')}, commit {commit.stdout.strip() or '?'}, {cpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated zoo names (default: all)")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--quick", action="store_true", help="the tests' short measurement protocol")
    parser.add_argument("--max-memory-gb", type=float, default=12.0, help="address-space cap per model")
    parser.add_argument("--timeout-min", type=float, default=45.0, help="per model")
    parser.add_argument("--json", help="write the rows here too")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        child(args)
        return
    names = args.models.split(",") if args.models else [m.name for m in ZOO]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown models {unknown}; the zoo: {', '.join(BY_NAME)}")
    print(f"# zoo: {len(names)} models, {args.trials} trials at {args.budget}; {_machine()}", flush=True)
    rows = []
    for name in names:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, __file__, "--one", name, "--out", out.name, "--trials", str(args.trials)]
            cmd += ["--budget", args.budget, "--max-memory-gb", str(args.max_memory_gb)]
            cmd += ["--quick"] if args.quick else []
            try:
                proc = subprocess.run(cmd, timeout=args.timeout_min * 60, capture_output=True, text=True)
                text = Path(out.name).read_text()
                row = json.loads(text) if text else {}
                if not row:
                    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    row = {
                        "model": name,
                        "family": BY_NAME[name].family,
                        "error": f"exit {proc.returncode}: {tail}",
                    }
            except subprocess.TimeoutExpired:
                row = {
                    "model": name,
                    "family": BY_NAME[name].family,
                    "error": f"over {args.timeout_min:g} min",
                }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\n".join(["", *table(rows)]))
    searched = [r for r in rows if "error" not in r]
    with_depth = [r for r in searched if (v := lowest(r, *WITH_DEPTH)) is not None and v <= 0.5]
    without = [r for r in searched if (v := lowest(r, *WITHOUT_DEPTH)) is not None and v <= 0.5]
    # at most 1 in 6 of the trials tried (completed + failed) failed
    clean = [
        r
        for r in searched
        if r.get("search") == "ok" and 6 * len(r["failed"]) <= r["trials"] + len(r["failed"])
    ]
    print(
        f"\nreach 50% of FP32: {len(with_depth)}/{len(rows)} with depth, {len(without)}/{len(rows)} "
        f"without; searches to the end with <= 1 in 6 failed: {len(clean)}/{len(rows)}"
    )


if __name__ == "__main__":
    main()
