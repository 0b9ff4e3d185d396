"""Per-layer sensitivity (NetAdapt / HAQ / AIMET QuantAnalyzer style), and what it guides.

For each searched knob of each layer (one Optuna parameter) and each of its non-default values:
build the model with only that one change, measure it and score it; record the accuracy and the
latency change against the unmodified model. Results are cached in the run directory
(``sensitivity.json``), keyed by parameter and value, so a second run or a resumed search reuses
them. From the table:

* :func:`breaking_values`: values that alone cost more accuracy than the floor allows;
* :func:`greedy_candidates`: NetAdapt-style configurations, compressing the least sensitive
  layers per millisecond saved until the predicted latency meets the budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autotune.build import ArtifactBuilder
from autotune.knobs import LAYER_KNOBS, KnobValue
from autotune.measure import Measurer
from autotune.space import SearchSpace
from autotune.task import Task, evaluate_artifact

FILE_NAME = "sensitivity.json"
#: probe(params) -> (accuracy, median latency ms), or None when the candidate failed
Probe = Callable[[dict[str, Any]], "tuple[float, float] | None"]


@dataclass(frozen=True)
class Entry:
    param: str  # Optuna parameter name, ``layer:knob``
    value: KnobValue
    accuracy: float
    latency_ms: float
    d_accuracy: float  # vs the unmodified model (negative: worse)
    d_latency_ms: float  # vs the unmodified model (negative: faster)


@dataclass
class Table:
    reference_accuracy: float
    reference_ms: float
    entries: list[Entry]
    failed: dict[str, str]  # "param=value" -> why

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": {"accuracy": self.reference_accuracy, "latency_ms": self.reference_ms},
            "entries": [asdict(e) for e in self.entries],
            "failed": self.failed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Table:
        ref = d["reference"]
        return cls(
            ref["accuracy"], ref["latency_ms"], [Entry(**e) for e in d["entries"]], d.get("failed", {})
        )

    def rows(self) -> list[str]:
        """Plain-text table, least harmful per millisecond saved first."""
        lines = [f"{'parameter':<36} {'value':>6} {'Δ acc':>7} {'Δ ms':>8}"]
        for e in sorted(self.entries, key=lambda e: (e.d_accuracy < 0, -e.d_accuracy, e.d_latency_ms)):
            lines.append(f"{e.param:<36} {e.value!s:>6} {e.d_accuracy:>+7.2f} {e.d_latency_ms:>+8.3f}")
        return lines


def single_changes(space: SearchSpace) -> Iterator[tuple[str, KnobValue]]:
    """(parameter, value) for every non-default value of every searched per-layer knob."""
    for name, choices in space.parameters().items():
        knob = name.rsplit(":", 1)[1]
        if knob not in LAYER_KNOBS:
            continue  # runtime knobs are global, not per layer
        for value in choices:
            if value != LAYER_KNOBS[knob].default:
                yield name, value


def defaults(space: SearchSpace) -> dict[str, Any]:
    """Parameters of the unmodified model (the first thread choice for runtime)."""
    out = {}
    for name, choices in space.parameters().items():
        knob = name.rsplit(":", 1)[1]
        default = LAYER_KNOBS[knob].default if knob in LAYER_KNOBS else choices[0]
        out[name] = default if default in choices else choices[0]
    return out


def measure_sensitivity(
    space: SearchSpace, probe: Probe, cache: Path | None = None, progress: Callable[[str], None] | None = None
) -> Table:
    """Probe the unmodified model and every single change; reuse what ``cache`` already holds."""
    known: dict[str, Any] = {}
    if cache is not None and cache.is_file():
        known = json.loads(cache.read_text())
    base = defaults(space)

    def key(param: str, value: KnobValue) -> str:
        return f"{param}={value}"

    results: dict[str, Any] = dict(known.get("results", {}))

    def get(k: str, params: dict[str, Any]) -> Any:
        if k not in results:
            scored = probe(params)
            results[k] = list(scored) if scored is not None else None
            if cache is not None:
                cache.write_text(json.dumps({"results": results}, indent=1))
        return results[k]

    ref = get("reference", base)
    if ref is None:
        raise RuntimeError("the unmodified model failed to build, measure or evaluate")
    entries, failed = [], {}
    changes = list(single_changes(space))
    for i, (param, value) in enumerate(changes):
        if progress:
            progress(f"[{i + 1}/{len(changes)}] {param} = {value}")
        got = get(key(param, value), {**base, param: value})
        if got is None:
            failed[key(param, value)] = "failed to build, measure or evaluate"
            continue
        acc, ms = got
        entries.append(Entry(param, value, acc, ms, acc - ref[0], ms - ref[1]))
    return Table(ref[0], ref[1], entries, failed)


def breaking_values(table: Table, max_drop_points: float) -> list[Entry]:
    """Single changes that alone lose more than ``max_drop_points`` of accuracy."""
    return [e for e in table.entries if -e.d_accuracy > max_drop_points]


def drop_values(space: SearchSpace, entries: list[Entry]) -> list[str]:
    """Remove those values from the space; returns one note per removed value."""
    notes = []
    layers = {layer.name: layer for layer in space.layers}
    for e in entries:
        layer_name, knob = e.param.rsplit(":", 1)
        layer = layers.get(layer_name)
        if layer is not None and e.value in layer.knobs.get(knob, []) and len(layer.knobs[knob]) > 1:
            layer.knobs[knob].remove(e.value)
            notes.append(
                f"{knob} {e.value} not searched in {layer_name}: alone it costs {-e.d_accuracy:.2f} points"
            )
    return notes


def greedy_candidates(
    space: SearchSpace, table: Table, budget_ms: float, margins: tuple[float, ...] = (1.0, 0.9, 0.8)
) -> list[dict[str, Any]]:
    """NetAdapt-style configurations: predicted latency (single changes assumed additive) at
    ``budget * margin``, reached by the changes that cost the least accuracy per ms saved."""
    out: list[dict[str, Any]] = []
    for margin in margins:
        target = budget_ms * margin
        chosen: dict[str, Entry] = {}
        predicted = table.reference_ms
        while predicted > target:
            best, best_cost = None, float("inf")
            for e in table.entries:
                current = chosen.get(e.param)
                saved = -(e.d_latency_ms - (current.d_latency_ms if current else 0.0))
                if saved <= 0:
                    continue
                lost = -(e.d_accuracy - (current.d_accuracy if current else 0.0))
                cost = lost / saved  # negative: the change even gains accuracy
                if cost < best_cost:
                    best, best_cost = e, cost
            if best is None:
                break  # nothing left that saves time: the most this table can predict
            current = chosen.get(best.param)
            predicted += best.d_latency_ms - (current.d_latency_ms if current else 0.0)
            chosen[best.param] = best
        params = {**defaults(space), **{p: e.value for p, e in chosen.items()}}
        if chosen and params not in out:
            out.append(params)
    return out


def candidate_probe(task: Task, space: SearchSpace, builder: ArtifactBuilder, measurer: Measurer) -> Probe:
    """The real thing: build the candidate's artifact, measure it on the device, score it."""
    inputs = task.example_feeds()  # by ONNX input name, in their own dtypes

    def probe(params: dict[str, Any]) -> tuple[float, float] | None:
        candidate = space.candidate(params)
        try:
            artifact = builder.build(candidate)
            m = measurer.measure(artifact.path, inputs, candidate.runtime)
            if not m.usable:
                return None
            return evaluate_artifact(task, artifact.path), m.median_ms
        except Exception:  # noqa: BLE001 - a failed single change is a row in ``failed``
            return None

    return probe
