"""Per-layer sensitivity: accuracy and latency change when only one layer gets one knob value."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from autotune.build import RECOVERIES  # the same choices as the search's

    p.add_argument(
        "--model",
        help="'package.module:function' returning an autotune.Task, or a .onnx file "
        "(default: the built-in digits demo)",
    )
    p.add_argument(
        "--data",
        help="with --model FILE.onnx: an .npz with one array per model input (named as the input) "
        "and optional integer 'labels', as for 'autotune search'",
    )
    p.add_argument("--device", default="cpu", help="device profile name or .yaml (default: cpu)")
    p.add_argument("--space", help="search space preset name or .yaml (default: default)")
    p.add_argument(
        "--run",
        type=Path,
        help="run directory holding the cache (default: runs/TASK-DEVICE-sensitivity); "
        "a search's run directory reuses its table",
    )
    p.add_argument("--threads", type=int, help="fix the runtime thread count")
    p.add_argument("--recover", **RECOVERIES.cli("recovery of pruned candidates", "bn"))
    p.add_argument("--recover-steps", type=int, default=100, help="distillation steps with --recover kd")
    p.add_argument("--quick", action="store_true", help="short measurement protocol (noisier)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def run(args: argparse.Namespace) -> int:
    from autotune.build import ArtifactBuilder, Recovery
    from autotune.commands._task import load_task
    from autotune.devices import Protocol, device_for_profile
    from autotune.measure import Measurer
    from autotune.space import build_space, load_preset, load_profile
    from autotune.study import FILE_NAME, candidate_probe, measure_sensitivity

    recovery = Recovery(mode=args.recover, steps=args.recover_steps)
    profile = load_profile(args.device)
    preset = load_preset(args.space)
    device = device_for_profile(profile)
    task = load_task(args.model, args.data)
    run_dir = args.run or Path("runs") / f"{task.name}-{profile.name}-sensitivity"
    run_dir.mkdir(parents=True, exist_ok=True)
    space = build_space(task, preset, profile, threads=args.threads)
    builder = ArtifactBuilder(task, space, run_dir / "artifacts", recovery=recovery, keep_unrecovered=False)
    protocol = Protocol.quick() if args.quick else Protocol()
    measurer = Measurer(device, protocol, cache_dir=run_dir / "measurements")
    try:
        table = measure_sensitivity(
            space,
            candidate_probe(task, space, builder, measurer),
            cache=run_dir / FILE_NAME,
            progress=None if args.json else lambda line: print(line, file=sys.stderr),
        )
    finally:
        device.close()
    if args.json:
        print(json.dumps(table.to_dict(), indent=2))
        return 0
    print(f"unmodified: {table.reference_accuracy:.2f} {task.metric}, {table.reference_ms:.3f} ms median")
    print("\n".join(table.rows()))
    for change, why in table.failed.items():
        print(f"failed: {change}: {why}")
    print(f"saved: {run_dir / FILE_NAME}")
    return 0
