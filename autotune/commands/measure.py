"""Measure one ONNX model's latency on a device, with the full protocol, and print it like trtexec."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from autotune._util import error_line
from autotune.records import Measurement


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="the .onnx file to measure")
    p.add_argument(
        "--device",
        default="cpu",
        help="device profile name or .yaml path (default: cpu; see 'autotune devices')",
    )
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default: 1)")
    p.add_argument("--affinity", help="CPU cores to pin to, e.g. 0 or 0,1 (default: none)")
    p.add_argument(
        "--graph-opt",
        choices=["disable", "basic", "extended", "all"],
        default="all",
        help="onnxruntime graph optimisation level (default: all)",
    )
    p.add_argument(
        "--precision", choices=["fp32", "fp16"], default="fp32", help="GPU build precision (default: fp32)"
    )
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=DxDx..",
        help="input shape, e.g. input=1x3x224x224 (default: the model's, dynamic dims = --batch)",
    )
    p.add_argument(
        "--batch", type=int, default=1, help="size of dynamic dimensions without --shape (default: 1)"
    )
    p.add_argument("--quick", action="store_true", help="short protocol (smoke tests; numbers are rougher)")
    p.add_argument("--warmup", type=float, help="warm-up seconds (default: 1.0)")
    p.add_argument("--min-samples", type=int, help="minimum samples (default: 64)")
    p.add_argument("--min-time", type=float, help="minimum steady-state seconds (default: 1.0)")
    p.add_argument(
        "--sessions",
        type=int,
        help="time a paired ratio in at least this many fresh pairs of sessions (default: 3; "
        "1: one session, its own interval only)",
    )
    p.add_argument("--agent", help="agent URL for a remote device profile")
    p.add_argument(
        "--reference",
        default="canary",
        metavar="REF",
        help="time the model interleaved with REF (an .onnx file; 'canary': the device canary, "
        "the default; 'none': the model alone) and report the ratio, its interval and both medians",
    )
    p.add_argument("--json", action="store_true", help="print the measurement as JSON")


def _parse_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    from autotune.errors import UserError

    shapes = {}
    for spec in specs:
        name, _, dims = spec.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
            if not name or any(d < 0 for d in shape):
                raise ValueError
        except ValueError:
            raise UserError(f"--shape {spec!r}: expected NAME=DxDx.., e.g. input=1x3x224x224") from None
        shapes[name] = shape
    return shapes


def make_inputs(model_path: Path, shapes: dict[str, tuple[int, ...]], batch: int) -> dict[str, np.ndarray]:
    """Random inputs matching the model's graph inputs (dynamic dims -> ``batch``)."""
    import onnx

    from autotune.errors import UserError
    from autotune.inputs import graph_inputs, synthetic

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{model_path}: not an ONNX model ({error_line(exc, 200)})") from None
    specs = graph_inputs(model)
    unknown = set(shapes) - {s.name for s in specs}
    if unknown:
        raise UserError(
            f"--shape: the model has no input {sorted(unknown)} (inputs: {[s.name for s in specs]})"
        )
    rng = np.random.default_rng(0)
    inputs = {}
    for spec in specs:
        if spec.dtype.kind not in "biuf":
            raise UserError(f"{model_path}: input {spec.name!r} is {spec}; only numeric inputs can be fed")
        shape = shapes.get(spec.name) or spec.shape(batch, fill=batch)
        # the input's dtype and range: ids below the embedding table they index, masks of ones
        inputs[spec.name] = synthetic(spec, shape, rng, model)
    return inputs


def _protocol(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from autotune.devices import Protocol
    from autotune.errors import UserError

    p = Protocol.quick() if args.quick else Protocol()
    changes = {
        k: v
        for k, v in (
            ("warmup_s", args.warmup),
            ("min_samples", args.min_samples),
            ("min_time_s", args.min_time),
        )
        if v is not None
    }
    if any(v < 0 for v in changes.values()) or changes.get("min_samples", 1) < 1:
        raise UserError("--warmup / --min-time must be >= 0 and --min-samples >= 1")
    if args.sessions is not None:
        if args.sessions < 1:
            raise UserError("--sessions must be >= 1")
        changes.update(sessions=args.sessions, max_sessions=max(args.sessions, p.max_sessions))
    return replace(p, **changes)


def _reference(args: argparse.Namespace, shapes: dict[str, tuple[int, ...]], tmp: Path) -> Any:
    """The Reference that ``--reference`` names, or None for the model alone."""
    import onnx

    from autotune._util import sha256_file
    from autotune.devices import Reference
    from autotune.errors import UserError
    from autotune.measure import canary_inputs, write_canary

    if args.reference == "none":
        return None
    if args.reference == "canary":
        path = write_canary(tmp)
        return Reference(path, canary_inputs(), sha256_file(path))
    path = Path(args.reference)
    if not path.is_file():
        raise UserError(f"--reference {path}: no such file")
    try:
        names = {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"--reference {path}: not an ONNX model ({error_line(exc, 200)})") from None
    # --shape applies to the reference's inputs of the same name (usually the same network)
    inputs = make_inputs(path, {k: v for k, v in shapes.items() if k in names}, args.batch)
    return Reference(path, inputs, sha256_file(path))


def _ms(v: float) -> str:
    return f"{v:.4g} ms" if math.isfinite(v) else "n/a"


def format_report(
    m: Measurement,
    model: Path,
    inputs: dict[str, np.ndarray],
    profile: Any,
    sha: str,
    reference_name: str | None = None,
) -> str:
    """trtexec-style text: phases, the performance summary, the stability verdict."""
    fp, p = m.fingerprint, m.protocol
    shapes = ", ".join(f"{n} {a.dtype}[{'x'.join(map(str, a.shape))}]" for n, a in inputs.items())
    stack = ", ".join(
        f"{k} {fp[k]}" for k in ("onnxruntime", "tensorrt", "torch", "execution_provider") if k in fp
    )
    hw = fp.get("gpu") or fp.get("cpu_model", "?")
    lines = [
        f"=== Measurement: {model.name} on {profile.name} ({m.backend}) ===",
        f"[I] Model: {model} (sha256 {sha[:12]}, {model.stat().st_size / 2**20:.2f} MiB); inputs: {shapes}",
        f"[I] Device: {hw}, {fp.get('logical_cores', '?')} logical cores; {stack}; "
        f"threads {m.runtime.get('threads')}",
    ]
    if p:
        lines.append(
            f"[I] Protocol: warm-up >= {p['warmup_s']} s and >= {p['warmup_runs']} runs; steady state >= "
            f"{p['min_samples']} samples and >= {p['min_time_s']} s (cap {p['max_time_s']} s); "
            f"unstable above IQR/median {p['unstable_iqr']:.0%}"
            + (f" or below {p['min_cpu_share']:.0%} of a core" if m.cpu_share_attempts else "")
            + f" after {p['max_retries']} retries"
        )
    if not m.usable:
        lines.append(f"[E] {m.status}: {m.error}")
        return "\n".join(lines)
    lines.append(
        f"[I] Phases: load {_ms(m.load_ms)}, first run {_ms(m.first_run_ms)}, "
        f"warm-up {m.warmup_s or 0:.2f} s ({'?' if m.warmup_runs is None else m.warmup_runs} runs), "
        f"steady state {m.steady_s:.2f} s ({m.retries + 1} attempt(s))"
    )
    lines.append("=== Performance summary ===")
    lines.append(f"[I] Throughput: {1e3 / m.mean_ms:.4g} qps (one stream)")
    lines.append(
        f"[I] Latency: min = {_ms(m.min_ms)}, max = {_ms(max(m.samples_ms))}, mean = {_ms(m.mean_ms)}, "
        f"median = {_ms(m.median_ms)}, percentile(90%) = {_ms(m.p90_ms)}, percentile(99%) = {_ms(m.p99_ms)}"
    )
    if (g := m.gpu_compute) is not None:
        lines.append(
            f"[I] GPU Compute Time: min = {_ms(g.min_ms)}, mean = {_ms(g.mean_ms)}, median = "
            f"{_ms(g.median_ms)}, percentile(90%) = {_ms(g.p90_ms)}, percentile(99%) = {_ms(g.p99_ms)}"
        )
    if m.host_io_ms is not None:
        parts = ", ".join(f"{k} {_ms(v)}" for k, v in (("H2D", m.h2d_ms), ("D2H", m.d2h_ms)) if v is not None)
        lines.append(
            f"[I] Host latency with copies: median = {_ms(m.host_io_ms)}" + (f" ({parts})" if parts else "")
        )
    if m.ratio is not None and m.ratio_ci:
        ref = m.reference_stats
        lines.append(
            f"[I] Reference: {reference_name or '?'} (sha256 {(m.reference_sha256 or '?')[:12]}), "
            f"median = {_ms(m.reference_median_ms or math.nan)} in the same window"
            + (f", IQR = {_ms(ref.iqr_ms)}" if ref is not None else "")
        )
        lines.append(
            f"[I] Ratio to the reference: {m.ratio:.4f}, 95% interval [{m.ratio_ci[0]:.4f}, "
            f"{m.ratio_ci[1]:.4f}] (+-{m.ratio_resolution:.1%}), "
            + (
                f"over {len(m.session_ratios)} fresh sessions "
                f"({', '.join(f'{r:.4f}' for r in m.session_ratios)}; "
                f"one session alone claimed [{m.ratio_ci_within[0]:.4f}, {m.ratio_ci_within[1]:.4f}])"
                if m.session_ratios and m.ratio_ci_within
                else f"median of {m.n} interleaved pairs"
            )
            + (" (measured separately: this backend does not time pairs)" if m.interleaved is False else "")
        )
    lines.append(
        f"[I] Spread: IQR = {_ms(m.iqr_ms)} ({m.iqr_ms / m.median_ms:.1%} of median), CV = {m.cv:.1%}, "
        f"n = {m.n} samples x {m.runs_per_sample} run(s)"
    )
    if (load := m.host_load) is not None:
        lines.append(
            f"[I] Host: other processes used {load.foreign_cpu:.0%} of the CPUs while measuring"
            + (f", hypervisor steal {load.steal:.0%}" if load.steal else "")
        )
    if m.cuda_graph:
        lines.append(f"[I] CUDA graph: {m.cuda_graph}")
    rel = m.iqr_ms / m.median_ms
    limit = p.get("unstable_iqr", 0.10)
    share = m.cpu_share_attempts
    if m.status == "ok" and m.paired and m.interleaved is not False:
        lines.append(
            f"[I] Stability: ok (the ratio's interval is +-{m.ratio_resolution:.1%} <= "
            f"+-{p.get('session_resolution' if m.session_ratios else 'ratio_resolution', 0.02):.0%}; "
            "absolute times vary with the host)"
        )
    elif m.status == "ok":
        got = f"; the thread got {max(share):.0%} of a core" if share else ""
        lines.append(f"[I] Stability: ok (IQR/median {rel:.1%} <= {limit:.0%}{got})")
    else:
        lines.append(
            f"[W] * Latency is UNSTABLE after {m.retries} retries: "
            f"{m.unstable_reason or f'IQR/median {rel:.1%} > {limit:.0%}'}; "
            "do not trust this number (close other programs, pin --affinity, or raise --min-time)"
        )
    if m.cv > 0.05 and not m.paired:
        lines.append(f"[W] * Latency has a coefficient of variance of {m.cv:.1%} (> 5%)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from autotune._tempdir import OwnedTemporaryDirectory
    from autotune._util import sha256_file
    from autotune.devices import RuntimeOptions, device_for_profile
    from autotune.errors import UserError
    from autotune.measure import pair_separately
    from autotune.space import load_profile

    model = Path(args.model)
    if not model.is_file():
        raise UserError(f"{model}: no such file")
    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be at least 1")
    if args.batch < 1:
        raise UserError(f"--batch {args.batch}: must be at least 1")
    affinity = None
    if args.affinity:
        try:
            affinity = tuple(int(c) for c in args.affinity.split(","))
        except ValueError:
            raise UserError(f"--affinity {args.affinity!r}: expected core numbers like 0 or 0,1") from None
    profile = load_profile(args.device)
    protocol = _protocol(args)
    shapes = _parse_shapes(args.shape)
    inputs = make_inputs(model, shapes, args.batch)
    tmp = OwnedTemporaryDirectory("measure")
    reference = _reference(args, shapes, Path(tmp.name))
    runtime = RuntimeOptions(
        threads=args.threads, graph_optimization=args.graph_opt, affinity=affinity, precision=args.precision
    )
    device = device_for_profile(profile, agent=args.agent)
    try:
        try:
            if reference is None:
                m = device.measure(model, inputs, runtime, protocol)
            elif device.supports_paired:
                m = device.measure_paired(model, inputs, reference, runtime, protocol)
            else:
                m = device.measure(model, inputs, runtime, protocol)
                if m.usable:
                    r = device.measure(reference.path, reference.inputs, runtime, protocol)
                    m = pair_separately(m, r, reference.sha256)
        except OSError as exc:  # e.g. sched_setaffinity with a core that does not exist
            raise UserError(f"cannot measure: {exc}") from None
    finally:
        device.close()
        tmp.cleanup()
    reference_name = None
    if reference is not None:
        reference_name = "canary" if args.reference == "canary" else str(reference.path)
        m.extra["reference_name"] = reference_name  # in --json's measurement, as before
    if m.status == "invalid_model":
        raise UserError(f"{model}: invalid model: {m.error}")
    sha = sha256_file(model)
    if args.json:
        print(
            json.dumps(
                {
                    "model": str(model),
                    "sha256": sha,
                    "device": profile.name,
                    "reference": reference_name,
                    **m.to_dict(),
                },
                indent=2,
                default=str,
            )
        )
    else:
        print(format_report(m, model, inputs, profile, sha, reference_name))
    return 0 if m.usable else 1
