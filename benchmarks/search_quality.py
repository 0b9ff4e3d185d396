"""Search quality: does the search beat uniform compression, and how fast does it find the front?

Models, all trained on scikit-learn's digits; budgets are shares of each model's own FP32
latency (one thread, onnxruntime CPU):

  demo    the built-in DigitsNet at 32x32
  resnet  a ResNet-18-like net (BasicBlock [2, 2, 2, 2], base width 32) at 64x64
  mobile  a MobileNetV3-like net (depthwise, squeeze-excite, hardswish; channels x2) at 64x64

``--data hard`` (``hard_digits``): the same digits at random affine poses in a 64x64 canvas,
with a smaller distractor digit, noise blobs, an occluding rectangle and pixel noise, two draws
of each image (2874 train, 720 test), every model trained 6 epochs (weights cached as
``bench-hard-<model>-v1.pt``); ``demo`` is then DigitsNet at width 16 and 64x64. On digits,
distilled uniform compression comes within 0.56 points of FP32, so nothing is left for
per-layer allocation to win; the hard task keeps FP32 below 95%.

Latency is paired (docs/measurement.md): every configuration is timed interleaved with the FP32
artifact in one session and scored by the median per-pair ratio, so a budget of 35% means
"ratio <= 0.35", decided on the ratio alone, and the figures hold while other jobs load the VM.

Part 1, per model x budget (20/35/50% of FP32) x seed, at equal trial counts: autotune's
default (uniform baselines first, then ``--sampler auto``), Optuna's RandomSampler on the same
space, and the best uniform configuration (every uniform width x bit-width, all measured). Every
candidate gets BatchNorm re-estimation; each method's finalists then get distillation
(``--final-steps``) as ``--recover-final-steps`` chooses them: the ``--final-top`` most accurate
and the ``--final-top`` largest configurations under the budget, and (autotune) the most accurate
of its uniform baselines. The most accurate after distillation is the one it ships. The verdict
per cell is the issue's bar: +1.0 point over the best uniform configuration after the same
distillation, or >= 10% lower latency at equal or better accuracy.

The quantization recipe is fixed at its defaults for every method (``--recipe fixed``), so part 1
measures what per-layer allocation buys over uniform compression; searching the recipe as well
(``--recipe searched``, autotune's CPU default) pays on top of that (``benchmarks/recipes.py``).

Part 2, an enumerable space (216 configurations of the demo, every one measured): hypervolume
of the (accuracy, latency) points faster than FP32 relative to the exhaustive true front after
20/40/60 trials, and the trials needed to reach 95% of it (searches run to ``--hv-horizon``
trials so that slow methods are measured, not censored), per sampler, over ``--hv-seeds``.

Each configuration is built, measured and scored once: results are cached in ``--cache`` by
configuration, so seeds, budgets and methods proposing the same configuration share it (and a
second run of the benchmark re-uses everything). Usage::

    python benchmarks/search_quality.py                                   # full run
    python benchmarks/search_quality.py --part 1 --seeds 1 --trials 30 --final-top 2
    python benchmarks/search_quality.py --part 2 --no-gp
    python benchmarks/search_quality.py --data hard --part 1 --methods default --trials 20 --final-top 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F

from autotune._util import cache_root
from autotune.build._builder import ArtifactBuilder
from autotune.build._recover import FINAL_RECOVERY, Recovery
from autotune.devices import OrtCpuDevice, Protocol, Reference
from autotune.knobs import LAYER_KNOBS as KNOBS
from autotune.knobs import RECIPE_KNOBS
from autotune.measure import Measurer
from autotune.space._profiles import load_profile
from autotune.space._space import SearchSpace, build_space, load_preset
from autotune.study._samplers import AUTO, make_sampler
from autotune.task._evaluate import evaluate_artifact
from autotune.task._task import Task

BUDGETS = (0.20, 0.35, 0.50)
HV_AT = (20, 40, 60)
#: training epochs of every model on ``--data hard``
HARD_EPOCHS = 6
#: shorter than the default protocol (this runs thousands of measurements on a shared VM)
PROTOCOL = Protocol(warmup_s=0.2, warmup_runs=5, min_samples=32, min_time_s=0.3, max_retries=1)


# -- models ----------------------------------------------------------------------------------
def _place(images: torch.Tensor, rng: np.random.Generator, size: int, scale: tuple, rot: float, shift: float):
    """``images`` drawn into a ``size`` x ``size`` canvas by one random affine map each: rotation
    within +-``rot`` degrees, a scale in ``scale`` of the canvas, shear within +-0.3 and a shift
    within +-``shift`` of the half-canvas."""
    n = len(images)
    angle = np.deg2rad(rng.uniform(-rot, rot, n))
    s = rng.uniform(*scale, n)
    shear = rng.uniform(-0.3, 0.3, n)
    t = rng.uniform(-shift, shift, (n, 2))
    cos, sin = np.cos(angle) / s, np.sin(angle) / s
    theta = np.stack([np.stack([cos, -sin + shear / s, t[:, 0]], 1), np.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(torch.from_numpy(theta.astype(np.float32)), [n, 1, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def hard_digits(size: int, seed: int = 0, copies: tuple[int, int] = (2, 2)) -> tuple[np.ndarray, ...]:
    """``--data hard``: scikit-learn's digits made hard, generated deterministically from ``seed``.

    The same stratified 80/20 split of the 1797 digits as ``digits``; each image appears
    ``copies`` times (train, test), each copy drawn anew: the digit at a random affine pose
    (rotation +-30 degrees, 50-80% of the canvas, shear, shift), a smaller, dimmer distractor
    digit at any angle anywhere (drawn with max, so it may overlap), blurred positive noise blobs,
    an occluding rectangle of random grey (half of the images), random contrast and pixel noise.
    Returned as ``digits`` does: x_train, x_test, y_train, y_test, normalised by the train set.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = F.pad(torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1), (1, 1, 1, 1))
    labels = data.target.astype(np.int64)
    parts = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    xs, ys = [], []
    for part, (idx, k) in enumerate(zip(parts, copies, strict=True)):
        rng = np.random.default_rng(seed * 10 + part + 1)
        idx = np.repeat(idx, k)
        n = len(idx)

        def draw(low: float, high: float, rng: np.random.Generator = rng, n: int = n) -> torch.Tensor:
            return torch.from_numpy(rng.uniform(low, high, (n, 1, 1, 1)).astype(np.float32))

        x = _place(images[idx], rng, size, (0.5, 0.8), 30, 0.3)
        other = rng.integers(0, len(labels), n)
        x = torch.maximum(x, _place(images[other], rng, size, (0.2, 0.35), 180, 0.7) * draw(0.3, 0.7))
        blobs = torch.from_numpy(rng.normal(0, 1, (n, 1, size // 8, size // 8)).astype(np.float32))
        blobs = F.interpolate(blobs, size=(size, size), mode="bicubic", align_corners=False)
        x = x + 0.2 * blobs.clamp(min=0)
        for i in range(n):
            if rng.random() < 0.5:
                h, w = rng.integers(8, 20, 2)
                r, c = rng.integers(0, size - h), rng.integers(0, size - w)
                x[i, :, r : r + h, c : c + w] = float(rng.uniform(0, 1))
        x = x * draw(0.6, 1.2)
        x = x + torch.from_numpy(rng.normal(0, 0.15, x.shape).astype(np.float32))
        xs.append(x.numpy())
        ys.append(labels[idx])
    mean, std = xs[0].mean(), xs[0].std()
    x_train, x_test = ((x - mean) / std for x in xs)
    return x_train.astype(np.float32), x_test.astype(np.float32), ys[0], ys[1]


def digits(size: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    x = ((images - 0.30) / 0.32).numpy().astype(np.float32)
    return tuple(
        train_test_split(x, data.target.astype(np.int64), test_size=0.2, stratify=data.target, random_state=0)
    )


def trained(
    name: str, model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, version: str = "v2"
) -> torch.nn.Module:
    path = Path(cache_root()) / f"bench-{name}-{version}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = epochs * ((len(xt) + 63) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=6e-3, total_steps=steps, pct_start=0.25)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(xt[idx]), yt[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def digits_task(name: str, data: str = "digits") -> Task:
    """``name``'s task on ``data``: "digits" (the figures recorded so far) or "hard"
    (``hard_digits``: every model at 64x64, the demo's DigitsNet at width 16)."""
    if data == "hard":
        return hard_task(name)
    if name == "demo":
        from autotune.task.demo import demo_task

        task = demo_task()
        task.finetune = None  # built-in recovery only, as for the other models
        return task
    from autotune.task.zoo import MobileNetV3, resnet18

    x_train, x_test, y_train, y_test = digits(64)
    if name == "resnet":
        model = trained(name, resnet18(10, width=32, in_channels=1), x_train, y_train, epochs=6)
    else:
        model = trained(name, MobileNetV3(scale=2), x_train, y_train, epochs=10)
    return _task(name, model, x_train, x_test, y_test)


def hard_task(name: str) -> Task:
    from autotune.task.zoo import DigitsNet, MobileNetV3, resnet18

    x_train, x_test, y_train, y_test = hard_digits(64)
    builders = {
        "demo": lambda: DigitsNet(16),
        "resnet": lambda: resnet18(10, width=32, in_channels=1),
        "mobile": lambda: MobileNetV3(scale=2),
    }
    model, epochs = builders[name](), HARD_EPOCHS
    model = trained(f"hard-{name}", model, x_train, y_train, epochs=epochs, version="v1")
    return _task(f"hard-{name}", model, x_train, x_test, y_test)


def _task(
    name: str, model: torch.nn.Module, x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> Task:
    from autotune.task.demo import accuracy

    order = np.random.default_rng(0).permutation(len(x_train))
    return Task(
        source=model,
        example_inputs=(torch.from_numpy(x_test[:1].copy()),),
        evaluate=lambda runner: accuracy(runner, x_test, y_test),
        calibration=[(x_train[order[i * 32 : (i + 1) * 32]],) for i in range(8)],
        name=f"bench-{name}",
    )


# -- one model's configurations, each scored once ----------------------------------------------
@dataclass
class Bench:
    name: str
    task: Task
    space: SearchSpace
    workdir: Path
    final_steps: int
    trial_recovery: Recovery = field(default_factory=Recovery)
    results: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.trial_recovery
        suffix = "" if r.mode == "bn" else f"-{r.mode}{r.steps}"
        self.file = self.workdir / f"{self.name}{suffix}-paired.json"
        if self.file.is_file():
            self.results = json.loads(self.file.read_text())
        self.builder = ArtifactBuilder(
            self.task, self.space, self.workdir / "artifacts", recovery=r, keep_unrecovered=False
        )
        kd = Recovery(mode=FINAL_RECOVERY, steps=self.final_steps)
        self.final_builder = ArtifactBuilder(
            self.task, self.space, self.workdir / "artifacts", recovery=kd, keep_unrecovered=False
        )
        self._paired: Measurer | None = None
        self.inputs = {"input": self.task.example_inputs[0].numpy()}
        self.built = 0

    def key(self, params: dict[str, Any], prefix: str = "") -> str:
        config = self.space.candidate(params).to_dict()
        if not config["recipe"]:  # the default recipe: keys as before recipes were knobs
            del config["recipe"]
        return prefix + json.dumps(config, sort_keys=True)

    def _save(self) -> None:
        self.file.write_text(json.dumps(self.results))

    def score(self, params: dict[str, Any]) -> tuple[float, float, float] | None:
        """(accuracy after recovery, latency ratio to FP32, bytes), or None if it failed.

        Latency is paired: every configuration is timed interleaved with the FP32 artifact in one
        session, so the ratio holds while other jobs load the VM (docs/measurement.md)."""
        key = self.key(params)
        if key not in self.results:
            candidate = self.space.candidate(params)
            self.built += 1
            try:
                art = self.builder.build(candidate)
                m = self.paired().measure(art.path, self.inputs, candidate.runtime)
                acc = evaluate_artifact(self.task, art.path) if m.usable and m.ratio else None
                self.results[key] = None if acc is None else [acc, m.ratio, float(art.size_bytes)]
            except Exception as exc:  # noqa: BLE001 - a failed candidate is a failed trial
                print(f"  {self.name}: failed: {exc}", file=sys.stderr)
                self.results[key] = None
            self._save()
        got = self.results[key]
        return None if got is None else tuple(got)

    def paired(self) -> Measurer:
        if self._paired is None:
            params = uniform(self.space, 1.0, 32)
            art = self.builder.build(self.space.candidate(params))
            ref = Reference(art.path, self.inputs)
            self._paired = Measurer(
                OrtCpuDevice(), PROTOCOL, self.workdir / "measurements", canary_every=0, reference=ref
            )
        return self._paired

    def reference(self) -> tuple[float, float, float]:
        """The unmodified model: (accuracy, FP32 median ms, bytes). Its ms is only printed (the
        median of 3 fresh measurements); budgets and latencies are ratios to it."""
        params = uniform(self.space, 1.0, 32)
        key = self.key(params)
        if "reference" not in self.results:
            candidate = self.space.candidate(params)
            art = self.builder.build(candidate)
            fresh = Measurer(OrtCpuDevice(), PROTOCOL, cache_dir=None, canary_every=0)
            runs = [fresh.measure(art.path, self.inputs, candidate.runtime).median_ms for _ in range(3)]
            acc = evaluate_artifact(self.task, art.path)
            self.results["reference"] = [acc, statistics.median(runs), float(art.size_bytes)]
            self.results[key] = [acc, 1.0, float(art.size_bytes)]
            self._save()
        return tuple(self.results["reference"])

    def recovered(self, params: dict[str, Any]) -> float:
        """Accuracy after distillation (pruned configurations only; others are unchanged)."""
        key = self.key(params, f"kd{self.final_steps}:")
        if key not in self.results:
            candidate = self.space.candidate(params)
            art = self.final_builder.build(candidate)
            self.results[key] = evaluate_artifact(self.task, art.path)
            self._save()
        return self.results[key]


def uniform(space: SearchSpace, width: float, bits: int) -> dict[str, Any]:
    out = {}
    for name, choices in space.parameters().items():
        knob = name.rsplit(":", 1)[1]
        want = {"width": width, "bits": bits}.get(knob, KNOBS[knob].default if knob in KNOBS else choices[0])
        out[name] = want if want in choices else (KNOBS[knob].default if knob in KNOBS else choices[0])
    return out


def uniform_configs(space: SearchSpace) -> dict[str, dict[str, Any]]:
    widths = sorted({w for layer in space.layers for w in layer.knobs.get("width", [1.0])}, reverse=True)
    bits = sorted({b for layer in space.layers for b in layer.knobs.get("bits", [32])}, reverse=True)
    out: dict[str, dict[str, Any]] = {}
    for w in widths:
        for b in bits:
            params = uniform(space, w, b)
            if params not in out.values():
                out[
                    ("fp32" if b == 32 else f"int{b}")
                    if w == 1.0
                    else f"w{w}" + ("" if b == 32 else f"+int{b}")
                ] = params
    return out


# -- searches ----------------------------------------------------------------------------------
def search(bench: Bench, sampler: str, budget: float, trials: int, seed: int, baselines: bool) -> list[Any]:
    """Trials in order: (params, score or None). Same objectives and constraint as autotune."""
    study = optuna.create_study(
        directions=["maximize", "minimize", "minimize"], sampler=make_sampler(sampler, seed)
    )
    if baselines:
        for params in bench.space.baselines().values():
            study.enqueue_trial(params, skip_if_exists=True)
    out: list[Any] = []

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        params = {n: trial.suggest_categorical(n, c) for n, c in bench.space.parameters().items()}
        got = bench.score(params)
        out.append((params, got))
        if got is None:
            raise RuntimeError("candidate failed")
        trial.set_constraint("latency_budget", got[1] - budget)
        return got

    study.optimize(objective, n_trials=trials, catch=(RuntimeError,))
    return out


def best_feasible(runs: list[Any], budget: float, k: int = 1) -> list[Any]:
    """The ``k`` most accurate distinct configurations under the budget, best first."""
    feasible = {json.dumps(p, sort_keys=True): (p, s) for p, s in runs if s is not None and s[1] <= budget}
    return sorted(feasible.values(), key=lambda ps: (-ps[1][0], ps[1][1]))[:k]


def finalists(runs: list[Any], budget: float, k: int, uniform: Any = ()) -> list[Any]:
    """What gets distilled, as autotune's final recovery (guide.enqueue_final): the ``k`` most
    accurate configurations under the budget, the ``k`` largest (most weights kept: what
    distillation recovers from) and the most accurate of the search's ``uniform`` baselines."""
    by_size = sorted(best_feasible(runs, budget, len(runs)), key=lambda ps: -ps[1][2])[:k]
    baselines = best_feasible([(p, s) for p, s in runs if p in list(uniform)], budget, 1)
    out = best_feasible(runs, budget, k)
    return out + [ps for ps in by_size + baselines if ps not in out]


# -- part 2: hypervolume on an enumerable space -------------------------------------------------
def enumerable_space(space: SearchSpace) -> SearchSpace:
    """3 width groups x {1, 0.75, 0.5} and 3 heaviest layers x {32, 8}: 216 configurations."""
    roots = [layer for layer in space.layers if "width" in layer.knobs][:3]
    heavy = [layer for layer in space.layers if layer.name.startswith(("layer2.0.conv2", "layer3"))][:3]
    for layer in space.layers:
        layer.knobs = {k: [KNOBS[k].default] for k in layer.knobs}
    for layer in roots:
        layer.knobs["width"] = [1.0, 0.75, 0.5]
    for layer in heavy:
        layer.knobs["bits"] = [32, 8]
    return space


def hypervolume(points: list[tuple[float, float]], acc_ref: float, lat_ref: float) -> float:
    """Area dominated by (accuracy up, latency down) points inside the reference box."""
    pts = sorted((lat, acc) for acc, lat in points if lat <= lat_ref and acc > acc_ref)
    area, best = 0.0, acc_ref
    for i, (lat, acc) in enumerate(pts):
        best = max(best, acc)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else lat_ref
        area += (nxt - lat) * (best - acc_ref)
    return area


def part2(bench: Bench, seeds: int, samplers: list[str], horizon: int) -> dict[str, Any]:
    import itertools

    params_all = bench.space.parameters()
    grid = [dict(zip(params_all, combo, strict=True)) for combo in itertools.product(*params_all.values())]
    print(f"\n== enumerable space: {len(grid)} configurations of {bench.task.name} ==", flush=True)
    t0 = time.time()
    scores = [bench.score(p) for p in grid]
    print(f"exhaustive pass: {time.time() - t0:.0f} s ({bench.built} built this run)", flush=True)
    # the front of everything faster than FP32: the budget constraint is FP32's latency itself
    budget = 1.0
    feasible = [(s[0], s[1]) for s in scores if s is not None and s[1] <= budget]
    acc_ref = min(a for a, _ in feasible) - 1.0
    true_hv = hypervolume(feasible, acc_ref, budget)
    front = sum(
        1 for a, lat in feasible if not any(b >= a and m <= lat and (b, m) != (a, lat) for b, m in feasible)
    )
    print(
        f"reference box: latency <= FP32 ({bench.reference()[1]:.3f} ms), accuracy >= {acc_ref:.2f}; "
        f"{len(feasible)} configurations inside, {front} on the true front; true HV {true_hv:.3f}"
    )
    methods = [("random", "random", False)] + [(f"default[{s}]", s, True) for s in samplers]
    out: dict[str, Any] = {"configs": len(grid), "feasible": len(feasible), "front": front}
    print(
        f"{'method':<16}"
        + "".join(f"{'HV@' + str(n):>9}" for n in HV_AT)
        + f"   trials to 95% (mean, median; per seed, >{horizon} = not reached)"
    )
    for label, sampler, baselines in methods:
        ratios: dict[int, list[float]] = {n: [] for n in HV_AT}
        reach: list[int] = []
        for seed in range(seeds):
            runs = search(bench, sampler, budget, horizon, seed, baselines)
            # failed trials count as trials: they cost a build
            curve = [
                hypervolume([(s[0], s[1]) for _, s in runs[:k] if s is not None], acc_ref, budget) / true_hv
                for k in range(1, len(runs) + 1)
            ]
            for n in HV_AT:
                ratios[n].append(curve[min(n, len(curve)) - 1])
            hit = next((k + 1 for k, v in enumerate(curve) if v >= 0.95), None)
            reach.append(hit if hit is not None else horizon + 1)
        out[label] = {"hv": {n: statistics.mean(v) for n, v in ratios.items()}, "reach95": reach}
        cells = "".join(f"{statistics.mean(ratios[n]):>9.3f}" for n in HV_AT)
        print(
            f"{label:<16}{cells}   {statistics.mean(reach):.1f}, {statistics.median(reach):.1f}; {reach}",
            flush=True,
        )
    return out


# -- part 1 ------------------------------------------------------------------------------------
def distilled(bench: Bench, top: list[Any]) -> list[tuple[float, float]]:
    """(accuracy after distillation, latency ratio) of each of ``top``, as ``--recover-final-steps``
    does for a search's finalists."""
    return [(bench.recovered(p), s[1]) for p, s in top]


def pick(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """The one to ship: most accurate, then fastest."""
    return max(points, key=lambda p: (p[0], -p[1]), default=None)


def verdict(default: list[tuple[float, float]], uniform: tuple[float, float] | None) -> str:
    """The issue's bar: +1.0 point, or >= 10% lower latency at equal (or better) accuracy."""
    best = pick(default)
    if best is None or uniform is None:
        return "-"
    if best[0] >= uniform[0] + 1.0:
        return f"win +{best[0] - uniform[0]:.2f} pts"
    fast = min((lat for acc, lat in default if acc >= uniform[0]), default=None)
    if fast is not None and fast <= 0.9 * uniform[1]:
        return f"win {1 - fast / uniform[1]:.0%} faster at >= equal accuracy"
    return "at least equal" if best[0] >= uniform[0] else f"below {best[0] - uniform[0]:+.2f} pts"


METHODS = {"random": ("random", False), "default": ("auto", True)}


def part1(
    bench: Bench, seeds: int, trials: int, final: bool, top_k: int, methods: tuple[str, ...] = tuple(METHODS)
) -> list[dict[str, Any]]:
    task = bench.task
    fp32 = bench.reference()
    print(
        f"\n== {task.name}: FP32 {fp32[0]:.2f}% at {fp32[1]:.3f} ms; "
        f"{len(bench.space.parameters())} parameters =="
    )
    configs = uniform_configs(bench.space)
    uniforms = {name: bench.score(p) for name, p in configs.items()}
    for name, s in uniforms.items():
        print(f"  uniform {name:<12} " + ("failed" if s is None else f"{s[0]:6.2f}%  {s[1]:.3f}x FP32"))
    rows = []
    for budget in BUDGETS:  # a ratio to FP32, decided on the paired ratio alone
        feas = {n: s for n, s in uniforms.items() if s is not None and s[1] <= budget}
        base_name = max(feas, key=lambda n: (feas[n][0], -feas[n][1]), default=None)
        row: dict[str, Any] = {"model": task.name, "budget": budget, "fp32": fp32[:2]}
        row["uniform"] = None if base_name is None else (base_name, *feas[base_name][:2])
        for method in methods:
            sampler, baselines = METHODS[method]
            runs = [search(bench, sampler, budget, trials, s, baselines) for s in range(seeds)]
            tops = [
                finalists(r, budget, top_k, bench.space.baselines().values() if baselines else ())
                for r in runs
            ]
            row[method] = [top[0][1][:2] if top else None for top in tops]
            if final:
                row[f"{method}_kd"] = [distilled(bench, top) for top in tops]
        if final and base_name is not None:
            top = finalists([(configs[n], feas[n]) for n in feas], budget, top_k)
            row["uniform_kd"] = pick(distilled(bench, top))
            row["verdict"] = [verdict(d, row["uniform_kd"]) for d in row["default_kd"]]
        rows.append(row)
        print_row(row, flush=True)
    return rows


def _mean(values: list[Any], i: int | None = None) -> float | None:
    vals = [v if i is None else v[i] for v in values if v is not None]
    return statistics.mean(vals) if vals else None


def _fmt(v: float | None, spec: str = "6.2f") -> str:
    return "   n/a" if v is None else format(v, spec)


def _kd(point: tuple[float, float] | None) -> str:
    return "none" if point is None else f"{point[0]:.2f}% @ {point[1]:.3f}x"


def print_row(row: dict[str, Any], flush: bool = False) -> None:
    u = row["uniform"]
    uni = "none feasible" if u is None else f"{u[0]} {u[1]:.2f}% {u[2]:.3f}x"
    d_acc, r_acc = _mean(row["default"], 0), _mean(row.get("random", []), 0)
    d_lat = _mean(row["default"], 1)
    line = (
        f"  {row['budget']:>4.0%}: uniform {uni:<28} random {_fmt(r_acc)}% "
        f"default {_fmt(d_acc)}% @ {_fmt(d_lat, '.3f')}x"
    )
    if u is not None and d_acc is not None:
        line += f"  default - uniform {d_acc - u[1]:+.2f} pts"
    print(line, flush=flush)
    if "default_kd" in row:
        randoms = row.get("random_kd", [None] * len(row["default_kd"]))
        seeds = " / ".join(
            ("" if r is None else f"random {_kd(pick(r))}, ") + f"default {_kd(pick(d))}"
            for r, d in zip(randoms, row["default_kd"], strict=True)
        )
        print(
            f"        after KD: uniform {_kd(row.get('uniform_kd'))}; {seeds}; "
            f"verdict: {', '.join(row.get('verdict', ['-']))}",
            flush=flush,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["demo", "resnet", "mobile"], choices=["demo", "resnet", "mobile"]
    )
    parser.add_argument(
        "--data",
        choices=["digits", "hard"],
        default="digits",
        help="digits: scikit-learn's digits upsampled (the figures recorded so far); hard: the same "
        "digits at random poses with a distractor digit, clutter, occlusion and noise",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help="part 1's searches (the best uniform configuration is always measured)",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40, help="trials per search in part 1 (default 40)")
    parser.add_argument(
        "--final-steps", type=int, default=300, help="distillation steps for each cell's winners"
    )
    parser.add_argument("--no-final", action="store_true", help="skip the distillation of the winners")
    parser.add_argument(
        "--final-top", type=int, default=2, help="distilled per method and cell: k most accurate + k largest"
    )
    parser.add_argument(
        "--trial-recovery", choices=["bn", "kd"], default="bn", help="recovery of every pruned candidate"
    )
    parser.add_argument("--trial-steps", type=int, default=40, help="distillation steps per trial with kd")
    parser.add_argument(
        "--recipe",
        choices=["fixed", "searched"],
        default="fixed",
        help="fixed: the quantization recipe at its defaults for every method, so part 1 compares "
        "per-layer allocation with uniform compression alone; searched: the recipe knobs too",
    )
    parser.add_argument("--part", choices=["1", "2", "both"], default="both")
    parser.add_argument("--hv-seeds", type=int, default=10, help="seeds in part 2 (cheap: all cached)")
    parser.add_argument(
        "--hv-horizon", type=int, default=150, help="trials per search in part 2 (when is 95%% reached?)"
    )
    parser.add_argument("--no-gp", action="store_true", help="leave the (slow) GP sampler out of part 2")
    parser.add_argument("--cache", type=Path, default=Path(cache_root()) / "search-quality")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # the measuring thread gets the other core
    args.cache.mkdir(parents=True, exist_ok=True)
    profile, preset = load_profile("cpu"), load_preset(None)
    if args.recipe == "fixed":
        preset = replace(preset, recipe={name: [values[0]] for name, values in RECIPE_KNOBS.items()})
    print(f"default sampler (auto) = {AUTO}; recipe {args.recipe}; protocol {PROTOCOL.to_dict()}")
    report: dict[str, Any] = {"part1": [], "part2": None}
    t0 = time.time()
    if args.part in ("1", "both"):
        for name in args.models:
            task = digits_task(name, args.data)
            space = build_space(task, preset, profile, threads=1)
            recovery = Recovery(mode=args.trial_recovery, steps=args.trial_steps)
            key = name if args.data == "digits" else f"{args.data}-{name}"
            bench = Bench(key, task, space, args.cache, args.final_steps, recovery)
            report["part1"] += part1(
                bench, args.seeds, args.trials, not args.no_final, args.final_top, tuple(args.methods)
            )
            print(
                f"  ({bench.built} configurations built for {name}; {time.time() - t0:.0f} s so far)",
                flush=True,
            )
    if args.part in ("2", "both"):
        task = digits_task("demo")
        space = enumerable_space(build_space(task, preset, profile, threads=1))
        bench = Bench("demo-enum", task, space, args.cache, args.final_steps)
        samplers = ["tpe", "nsga2"] + ([] if args.no_gp else ["gp"])
        report["part2"] = part2(bench, args.hv_seeds, samplers, args.hv_horizon)
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
