"""Quantization recipes and session options: what each costs or buys, and what a search picks.

Models (trained on scikit-learn's digits, as in benchmarks/search_quality.py, whose tasks this
re-uses): ``demo`` (DigitsNet 32x32), ``resnet`` (ResNet-18-like, 64x64), ``mobile``
(MobileNetV3-like: depthwise, squeeze-excite, hardswish; 64x64). Every layer int8 throughout.

Part 1, per recipe: uniform int8 with each recipe (one knob changed from autotune's fixed QDQ /
per-channel / u8 / MinMax recipe): test accuracy, and latency as the paired ratio to FP32
(candidate and FP32 interleaved in one process, 1 thread; docs/measurement.md).
Part 2, per session option: fixed-recipe int8 and FP32 medians, measured interleaved, with
threads 1 vs 2, sequential vs parallel execution, graph optimisation all / extended / basic.
Part 3, a short search (``autotune.search``, device profile cpu-multicore: threads 1 and 2, graph
optimisation all / extended and every recipe knob searched; every layer int8) against the
fixed recipe (the search's enqueued ``int8`` baseline); the winner is re-measured with 1 and 2
threads. Usage::

    python benchmarks/recipes.py                          # all three models, 16 search trials
    python benchmarks/recipes.py --models mobile --trials 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

# this checkout's autotune (not another installed one), and search_quality's trained models
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from search_quality import PROTOCOL, digits_task

import autotune
from autotune.build._builder import ArtifactBuilder
from autotune.devices import OrtCpuDevice, Reference, RuntimeOptions
from autotune.knobs._recipe import Recipe
from autotune.measure import Measurer
from autotune.space._profiles import load_profile
from autotune.space._space import Candidate, Preset, build_space
from autotune.task._evaluate import evaluate_artifact
from autotune.task._onnx_export import input_names
from autotune.task._task import Task

RECIPES = {
    "fixed (QDQ, per-channel, u8, MinMax)": Recipe(),
    "entropy": Recipe(calibration="entropy"),
    "percentile": Recipe(calibration="percentile"),
    "s8 activations": Recipe(activation="s8"),
    "per-tensor": Recipe(per_channel=False),
    "reduce_range": Recipe(reduce_range=True),
    "ORT pre-processing": Recipe(preprocess="optimize"),
    "QOperator": Recipe(format="qoperator"),
}
SESSIONS = {
    "1 thread, sequential, all": RuntimeOptions(),
    "2 threads, sequential, all": RuntimeOptions(threads=2),
    "2 threads, parallel, all": RuntimeOptions(threads=2, execution_mode="parallel"),
    "1 thread, sequential, extended": RuntimeOptions(graph_optimization="extended"),
    "1 thread, sequential, basic": RuntimeOptions(graph_optimization="basic"),
}
# every layer int8; the recipe knobs, the thread count and two graph optimisation levels searched
# (parallel execution is compared in part 2 only: each runtime key is one more reference latency
# the search has to estimate on this noisy VM)
SPACE = """knobs: {bits: [8], width: [1.0], sparsity: [0.0]}
runtime: {threads: [1, 2], execution_mode: [sequential], graph_optimization: [all, extended]}
"""


def host_load() -> str:
    """What the other processes on this shared VM are doing (the measurements share its 2 cores)."""
    busy = psutil.cpu_percent(interval=1.0, percpu=True)
    load = os.getloadavg()
    cores = " ".join(f"{b:.0f}%" for b in busy)
    return f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; cores busy {cores}"


class Bench:
    """One model: its int8 space, builder, and a measurer timing everything against FP32."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.task: Task = digits_task(name)
        preset = Preset(knobs={"bits": [8], "width": [1.0], "sparsity": [0.0]})
        self.space = build_space(self.task, preset, load_profile("cpu-multicore"))
        self.builder = ArtifactBuilder(self.task, self.space, workdir / name, keep_unrecovered=False)
        names = input_names(len(self.task.example_inputs))
        self.inputs = {n: t.numpy() for n, t in zip(names, self.task.example_inputs, strict=True)}
        self.fp32 = self.builder.build(Candidate(layers={}))
        reference = Reference(self.fp32.path, self.inputs, self.fp32.sha256)
        self.measurer = Measurer(
            OrtCpuDevice(), PROTOCOL, cache_dir=None, canary_every=0, reference=reference
        )
        self.int8 = self.space.candidate(self.space.baselines()["int8"])

    def paired(self, path: Path, runtime: RuntimeOptions) -> Any:
        return self.measurer.measure(path, self.inputs, runtime)


def part1(b: Bench) -> dict[str, Any]:
    print(f"\n[{b.name}] part 1: uniform int8 per recipe (1 thread; latency = paired ratio to FP32)")
    fp32_acc = evaluate_artifact(b.task, b.fp32.path)
    print(f"  {'recipe':<38} {'accuracy':>8} {'Δ fp32':>7} {'x FP32':>7} {'95% interval':>15}")
    print(f"  {'FP32':<38} {fp32_acc:8.2f} {0:+7.2f} {1:7.3f}")
    rows = {}
    for label, recipe in RECIPES.items():
        t0 = time.perf_counter()
        art = b.builder.build(replace(b.int8, recipe=recipe))
        build_s = time.perf_counter() - t0
        acc = evaluate_artifact(b.task, art.path)
        m = b.paired(art.path, RuntimeOptions())
        lo, hi = m.ratio_ci or (float("nan"), float("nan"))
        rows[label] = (acc, m.ratio)
        print(
            f"  {label:<38} {acc:8.2f} {acc - fp32_acc:+7.2f} {m.ratio:7.3f} [{lo:.3f}, {hi:.3f}]"
            f"  ({m.status}, built in {build_s:.1f} s)",
            flush=True,
        )
    return {"fp32": fp32_acc, "recipes": rows}


def part2(b: Bench) -> None:
    print(f"\n[{b.name}] part 2: session options (fixed-recipe int8 and FP32 interleaved; medians in ms)")
    art = b.builder.build(b.int8)
    print(f"  {'session options':<34} {'int8 ms':>8} {'FP32 ms':>8} {'x FP32':>7}")
    for label, runtime in SESSIONS.items():
        m = b.paired(art.path, runtime)
        print(
            f"  {label:<34} {m.median_ms:8.3f} {m.reference_median_ms or float('nan'):8.3f} "
            f"{m.ratio or float('nan'):7.3f}  ({m.status}, CV {m.cv:.1%})",
            flush=True,
        )


def part3(b: Bench, trials: int, workdir: Path, seed: int) -> None:
    searched = "recipes + threads + graph level searched (cpu-multicore)"
    print(f"\n[{b.name}] part 3: search, {trials} trials, {searched}")
    space_file = workdir / "recipes-space.yaml"
    space_file.write_text(SPACE)
    t0 = time.perf_counter()
    result = autotune.search(
        b.task,
        budget="3x",  # int8 can be slower than FP32 (the mobile model): compare with the fixed recipe
        device="cpu-multicore",
        space=str(space_file),
        trials=trials,
        out_dir=workdir / "runs",
        study_name=f"{b.name}-recipes-{trials}-s{seed}",
        protocol=PROTOCOL,
        progress=False,
        report=False,
        seed=seed,
    )
    wall = time.perf_counter() - t0
    fixed = result.baselines.get("int8")
    best = result.best
    if fixed is None or best is None:
        print("  no fixed-recipe baseline or no feasible result", flush=True)
        return

    def show(label: str, t: Any) -> None:
        print(
            f"  {label:<34} trial {t.number:>3}  {t.accuracy:6.2f}%  {t.latency_ms:8.3f} ms  "
            f"{t.candidate.describe()}"
        )

    print(f"  searched in {wall:.0f} s: {len(result.trials)} trials, {len(result.failures)} failed")
    show("fixed recipe (int8 baseline)", fixed)
    show("best found (most accurate)", best)
    res = max(fixed.measurement.ratio_resolution, best.measurement.ratio_resolution, 0.02)
    at_most = [t for t in result.feasible if t.latency_ms <= fixed.latency_ms * (1 + res)]
    top = max(at_most, key=lambda t: (t.accuracy, -t.latency_ms))
    show(f"best at <= fixed latency (+{res:.1%})", top)
    verdict = "yes" if top.accuracy >= fixed.accuracy else "NO"
    print(
        f"  as accurate as the fixed recipe at equal or lower latency: {verdict} "
        f"({top.accuracy - fixed.accuracy:+.2f} points)"
    )
    # the thread count was chosen by measurement: the search's own trials per thread count ...
    for threads in (1, 2):
        lat = sorted(t.latency_ms for t in result.trials if t.candidate.runtime.threads == threads)
        if lat:
            print(
                f"  search trials with {threads} thread(s): {len(lat)}, "
                f"latency median {statistics.median(lat):.3f} ms, fastest {lat[0]:.3f} ms"
            )
    # ... and the winner re-measured with 1 and with 2 threads
    medians = {}
    for threads in (1, 2):
        m = b.paired(top.artifact_path, replace(top.candidate.runtime, threads=threads))
        medians[threads] = m.median_ms
    print(
        f"  winner's medians: 1 thread {medians[1]:.3f} ms, 2 threads {medians[2]:.3f} ms "
        f"-> the search chose threads {top.candidate.runtime.threads}",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="+", default=["demo", "resnet", "mobile"], choices=["demo", "resnet", "mobile"]
    )
    p.add_argument("--trials", type=int, default=16, help="search trials per model, baselines included")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", nargs="*", default=[], choices=["1", "2", "3"], help="parts to skip")
    args = p.parse_args()
    import onnxruntime as ort

    from autotune.knobs._recipe import host_has_vnni

    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    print(
        f"CPU: {cpu}, {psutil.cpu_count()} logical cores, VNNI: {host_has_vnni()}; "
        f"onnxruntime {ort.__version__}"
    )
    print(f"host before: {host_load()}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autotune-recipes-") as tmp:
        workdir = Path(tmp)
        for name in args.models:
            b = Bench(name, workdir)
            if "1" not in args.skip:
                part1(b)
            if "2" not in args.skip:
                part2(b)
            if "3" not in args.skip:
                part3(b, args.trials, workdir, args.seed)
            print(f"host now: {host_load()}", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
