"""What the search learns before the sampler takes over: the unmodified model as the reference
(always measured and evaluated, whatever the preset says), the budget it resolves, the accuracy
floor, and the feasibility verdict after the baselines and the most aggressive configuration.
What it does after the sampler, final recovery, is in :mod:`autotune.study._final`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from autotune.build import ArtifactBuilder
from autotune.errors import UserError
from autotune.measure import Measurer
from autotune.records import RuntimeOptions
from autotune.space import Candidate, SearchSpace
from autotune.study._records import Baseline, Reference, TrialRecord
from autotune.study._sensitivity import FILE_NAME as SENSITIVITY_FILE
from autotune.study._sensitivity import (
    Table,
    breaking_values,
    candidate_probe,
    drop_values,
    greedy_candidates,
    measure_sensitivity,
)
from autotune.task import Task, evaluate_artifact


def measure_reference(
    task: Task,
    space: SearchSpace,
    builder: ArtifactBuilder,
    measurer: Measurer,
    inputs: dict[str, np.ndarray],
) -> Reference:
    """Build, measure and score the unmodified model (every knob at its default)."""
    candidate = Candidate(layers={}, runtime=RuntimeOptions(threads=space.threads[0]))
    artifact = builder.build(candidate)
    m = measurer.measure(artifact.path, inputs, candidate.runtime)
    if not m.usable:
        raise UserError(f"the unmodified model cannot be measured on this device ({m.status}: {m.error})")
    latency_ms = measurer.latency_ms(m, candidate.runtime)  # its own ratio is ~1: the estimate
    return Reference(evaluate_artifact(task, artifact.path), latency_ms, artifact.sha256, artifact.size_bytes)


def infeasible_message(
    measured: Sequence[tuple[str, float]],
    reference: Reference,
    budget_ms: float,
    space: SearchSpace,
    within: bool | None = None,
) -> str | None:
    """None when a measured configuration meets the budget; else the floor and what could go lower.

    ``measured``: (label, median ms) of the baselines and the most aggressive configuration;
    ``within``: whether one of them met the budget as the study decided it (a relative budget
    on the ratio alone, :func:`baselines_within`); None: decided on the milliseconds.
    A budget at or above the reference's own latency (``--budget 100%``) is always reachable: the
    unmodified model meets it by definition, even when its trial read 1.01x of itself.
    """
    if budget_ms >= reference.latency_ms:
        return None
    if within is None:
        within = bool(measured) and min(ms for _, ms in measured) <= budget_ms
    if not measured or within:
        return None
    label, floor = min(measured, key=lambda lm: lm[1])
    ref = reference.latency_ms
    lines = [
        f"the budget of {budget_ms:.3f} ms ({budget_ms / ref:.0%} of FP32) is below anything this space "
        f"reaches: the fastest configuration ({label}) runs in {floor:.3f} ms, {floor / ref:.0%} of FP32 "
        f"({ref:.3f} ms)."
    ]
    lower = []
    widths = sorted({float(w) for layer in space.layers for w in layer.knobs.get("width", [])})
    if not widths:
        lower.append("width is not searched on this model (see the notes)")
    elif widths[0] > 0.25:
        lower.append(f"narrower widths than {widths[0]:g} (a preset with width 0.25)")
    by_label = dict(measured)
    if "int8" in by_label and by_label["int8"] >= ref:
        lower.append(
            f"int8 runs at {by_label['int8'] / ref:.2f}x FP32 here: a device where int8 pays (a CPU with "
            "VNNI/AMX, a GPU or TensorRT profile)"
        )
    narrowest = [ms for name, ms in measured if name.startswith("w") and "+" not in name]
    blocks = sum("depth" in layer.knobs for layer in space.layers)
    if narrowest and widths and min(narrowest) > 0.5 * ref:
        fewer = f"all {blocks} droppable blocks are dropped in the floor" if blocks else "fewer layers"
        lower.append(
            f"width {widths[0]:g} still takes {min(narrowest) / ref:.0%} of FP32: latency here is bound by "
            f"the number of small ops, not FLOPs ({fewer}; a faster runtime or a larger batch)"
        )
    if not blocks and any(n.startswith("depth not searched") for n in space.notes):
        lower.append("fewer blocks: depth found no residual block to drop on this model (see the notes)")
    elif not blocks:
        lower.append("fewer blocks (a preset with depth: [keep, drop])")
    if space.threads == [1]:
        lower.append("more threads (--threads 2, or a profile listing several)")
    lines.append(
        "Could go lower: " + "; ".join(lower) + "." if lower else "No knob in this space goes lower."
    )
    return " ".join(lines)


def sensitivity_for_report(table: Table) -> dict[str, dict[str, float]]:
    """``{layer: {"width 0.5": Δ accuracy}}``: the shape the report's sensitivity section reads."""
    out: dict[str, dict[str, float]] = {}
    for e in table.entries:
        layer, knob = e.param.rsplit(":", 1)
        out.setdefault(layer, {})[f"{knob} {e.value}"] = e.d_accuracy
    return out


def sensitivity_guidance(
    task: Task,
    space: SearchSpace,
    builder: ArtifactBuilder,
    measurer: Measurer,
    run_dir: Path,
    reference: Reference,
    floor: float | None,
    budget_ms: float,
) -> tuple[Table, list[dict[str, Any]]]:
    """The per-layer table (cached in the run directory), values that alone break the floor
    dropped from the space, and greedy NetAdapt-style candidates for the budget."""
    probe = candidate_probe(task, space, builder, measurer)
    table = measure_sensitivity(space, probe, cache=run_dir / SENSITIVITY_FILE)
    if floor is not None:
        space.notes.extend(drop_values(space, breaking_values(table, reference.accuracy - floor)))
    params = space.parameters()
    table.entries = [e for e in table.entries if e.value in params.get(e.param, [])]
    return table, greedy_candidates(space, table, budget_ms)


def _probed(t: optuna.trial.FrozenTrial) -> Baseline | None:
    """The baseline a completed trial was, when the feasibility verdict counts it: every one but
    the greedy candidates (final recoveries of an earlier run met the budget in this space too)."""
    baseline = TrialRecord.from_trial(t).enqueued
    return baseline if baseline is not None and baseline.role != "greedy" else None


def baseline_latencies(study: optuna.Study) -> list[tuple[str, float]]:
    """(name, median ms) of the study's completed baselines: what the feasibility probe saw."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if (baseline := _probed(t)) is not None:
            out.append((baseline.name, t.values[1]))
    return out


def _within(t: optuna.trial.FrozenTrial) -> bool:
    """Met the latency budget, as the study decided it (the trial's constraint)."""
    return t.constraints.get("latency_budget", 0.0) <= 0


def baselines_within(study: optuna.Study) -> bool:
    """Whether a completed baseline met the latency budget (its trial constraint)."""
    return any(
        _within(t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if _probed(t) is not None
    )
