"""Search space: per-layer knobs discovered from the model, narrowed by a preset and a profile.

Discovery exports the FP32 model once to learn how each layer lands in ONNX (Conv, Gemm or
MatMul) and which layers produce the model's outputs; torch-pruning tells which layers root a
coupled channel group. A preset (search_spaces/*.yaml) narrows the values and layers; the
device profile removes what cannot pay on that hardware. Each (layer, knob) with more than one
value left becomes one categorical Optuna parameter named ``layer:knob``.
"""

from __future__ import annotations

import fnmatch
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import optuna
import torch

from autotune._util import error_line
from autotune._yaml import check_keys, load_mapping
from autotune.devices import RuntimeOptions
from autotune.errors import UserError
from autotune.inputs import call_model
from autotune.knobs import (
    LAYER_KNOBS,
    Discovery,
    KnobValue,
    OnnxKnob,
    Recipe,
    describe_study,
    from_params,
    has_transformer,
    name_layers,
    study_choices,
    study_section,
    value_label,
)
from autotune.space._profiles import DeviceProfile, data_dir, named_yaml
from autotune.task import Task, export_onnx, layer_nodes, output_nodes, weighted_nodes

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs


@dataclass
class Layer:
    """One Conv2d / Linear layer (or, for an ONNX task, one weighted ONNX node), or a unit a knob
    contributes of its own (a residual block for depth), which has no ONNX node."""

    name: str
    op: str | None  # ONNX op it exports to: Conv, Gemm or MatMul; None for a unit
    onnx_node: str | None
    knobs: dict[str, list[KnobValue]] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """One configuration: knob values per layer, plus runtime options and the quantization recipe."""

    layers: dict[str, dict[str, KnobValue]]
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    recipe: Recipe = field(default_factory=Recipe)

    def value(self, layer: str, knob: str) -> KnobValue:
        return self.layers.get(layer, {}).get(knob, LAYER_KNOBS[knob].default)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "runtime": self.runtime.to_dict(), "recipe": self.recipe.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        runtime, recipe = RuntimeOptions.from_dict(d.get("runtime", {})), Recipe.from_dict(d.get("recipe"))
        return cls(layers=d["layers"], runtime=runtime, recipe=recipe)

    def describe(self) -> str:
        """Short human summary, e.g. ``width 0.5x3 0.75x2 | int8x9 | threads 1``."""
        parts = []
        for knob, spec in LAYER_KNOBS.items():
            counts: dict[KnobValue, int] = {}
            for cfg in self.layers.values():
                v = cfg.get(knob, spec.default)
                if v != spec.default:
                    counts[v] = counts.get(v, 0) + 1
            if counts:
                parts.append(" ".join(f"{value_label(knob, v)}x{c}" for v, c in counts.items()))
        parts.append(describe_study(self.runtime, self.recipe, "int8" in " ".join(parts)))
        return " | ".join(parts) if len(parts) > 1 else f"fp32 | {parts[0]}"


@dataclass
class Preset:
    """A search_spaces/*.yaml file, validated."""

    knobs: dict[str, list[KnobValue]] = field(default_factory=dict)
    include: list[str] = field(default_factory=lambda: ["*"])
    keep: list[str] = field(default_factory=list)
    overrides: dict[str, dict[str, list[KnobValue]]] = field(default_factory=dict)
    runtime: dict[str, list[KnobValue]] = field(default_factory=dict)  # session options (runtime:)
    recipe: dict[str, list[KnobValue]] = field(default_factory=dict)  # quantization recipe (recipe:)


def available_presets() -> list[str]:
    return sorted(p.stem for p in data_dir("search_spaces").glob("*.yaml"))


def load_preset(name_or_path: str | None) -> Preset:
    if name_or_path is None:
        name_or_path = "default"
    path = named_yaml(name_or_path, "search_spaces", "--space", "preset", "a .yaml path")
    data = load_mapping(path)
    check_keys(data, ("knobs", "layers", "runtime", "recipe"), str(path))

    def knob_lists(d: Any, where: str) -> dict[str, list[KnobValue]]:
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected a mapping of knob -> list of values")
        check_keys(d, LAYER_KNOBS, where)
        out = {}
        for k, vals in d.items():
            if not isinstance(vals, list) or not vals:
                raise UserError(f"{where}.{k}: expected a non-empty list, got {vals!r}")
            out[k] = [LAYER_KNOBS[k].check(v, f"{where}.{k}") for v in vals]
        return out

    layers = data.get("layers") or {}
    check_keys(layers, ("include", "keep", "overrides"), f"{path}: layers")
    return Preset(
        knobs=knob_lists(data.get("knobs") or {}, f"{path}: knobs"),
        include=[str(p) for p in layers.get("include", ["*"])],
        keep=[str(p) for p in layers.get("keep", [])],
        overrides={
            str(pat): knob_lists(d, f"{path}: layers.overrides[{pat!r}]")
            for pat, d in (layers.get("overrides") or {}).items()
        },
        runtime=study_section(data, "runtime", str(path)),
        recipe=study_section(data, "recipe", str(path)),
    )


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass
class SearchSpace:
    layers: list[Layer]
    threads: list[int]
    notes: list[str] = field(default_factory=list)  # what was left out, and why
    ignored: list[str] = field(default_factory=list)  # layers torch-pruning must not narrow
    #: study-level knobs (``runtime:NAME``, ``recipe:NAME``) -> values, default first
    study: dict[str, list[KnobValue]] = field(default_factory=dict)

    @property
    def study_knobs(self) -> dict[str, list[KnobValue]]:
        return {**self.study, "runtime:threads": list[KnobValue](self.threads)}

    # -- Optuna ---------------------------------------------------------------------------
    def parameters(self) -> dict[str, list[KnobValue]]:
        """Optuna parameter name -> choices, for every knob with a real choice."""
        params = {
            f"{layer.name}:{knob}": values
            for layer in self.layers
            for knob, values in layer.knobs.items()
            if len(values) > 1
        }
        params.update({name: values for name, values in self.study_knobs.items() if len(values) > 1})
        return params

    def sample(self, trial: optuna.Trial) -> Candidate:
        chosen = {
            name: trial.suggest_categorical(name, choices) for name, choices in self.parameters().items()
        }
        return self.candidate(chosen)

    def candidate(self, params: dict[str, Any]) -> Candidate:
        """Build a Candidate from Optuna params; fixed knobs take their single value."""
        layers: dict[str, dict[str, KnobValue]] = {}
        for layer in self.layers:
            cfg = {}
            for knob, values in layer.knobs.items():
                value = params.get(f"{layer.name}:{knob}", values[0])
                if value != LAYER_KNOBS[knob].default:
                    cfg[knob] = value
            if cfg:
                layers[layer.name] = cfg
        runtime, recipe = from_params(params, self.study_knobs)
        return Candidate(layers=layers, runtime=runtime, recipe=recipe)

    def baselines(self) -> dict[str, dict[str, Any]]:
        """Uniform configurations, so the result never loses to them, and the most aggressive ones
        the space allows (:meth:`floor`: with the fewest bits, "floor", and in fp32, "floor-fp32",
        as int8 is slower than fp32 on small layers of many CPUs). Each is named by the values it
        really got: a preset without width 1.0 has no "fp32" baseline, its narrowest uniform one
        is "w0.5"; a floor equal to a uniform configuration keeps the uniform name.

        The floors come third and fourth, after fp32 and int8: the feasibility probe judges the
        budget on the baselines a run measured, and a run of fewer trials than baselines must still
        see what the space reaches at most (dropping blocks, which no uniform baseline does)."""
        widths = sorted({w for layer in self.layers for w in layer.knobs.get("width", [])}, reverse=True)
        listed = {b for layer in self.layers for b in layer.knobs.get("bits", [])}  # int8, else fp16
        bits = (32, 8) if 8 in listed else (32, 16) if 16 in listed else (32,)
        recipes: list[dict[str, Any]] = [{"width": w, "bits": b} for w in widths or [1.0] for b in bits]
        # fp32, int8 (or fp16), then moderate widths, their int8 versions, then the narrow ones
        recipes.sort(key=lambda r: (float(r["width"]) < 0.5, r["width"] != 1.0, r["bits"] != 32))
        uniform: list[tuple[str, dict[str, Any]]] = []
        for recipe in recipes:
            p = self._params(recipe)
            if all(p != q for _, q in uniform):
                uniform.append((self._uniform_name(self.candidate(p)), p))
        floors = [
            (next((n for n, q in uniform if q == p), name), p)
            for name, p in (("floor", self.floor()), ("floor-fp32", self.floor(fp32=True)))
        ]
        out: dict[str, dict[str, Any]] = {}
        for name, p in [*uniform[:2], *floors, *uniform[2:]]:
            if p not in out.values():
                out[name if name not in out else f"{name}#{len(out)}"] = p
        return out

    def floor(self, fp32: bool = False) -> dict[str, Any]:
        """The most aggressive configuration: every knob at its most aggressive value (the
        narrowest width, the fewest heads and bits, every droppable block dropped), sparsity left as it is
        (it does not speed up dense kernels); with ``fp32``, every layer in 32 bits."""
        return self._params({"width": "min", "heads": "min", "bits": 32 if fp32 else "min", "depth": "min"})

    def _params(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """Optuna parameters with ``recipe``'s value (``"min"``: the most aggressive) for each knob
        it names, the default for the others (the first choice where the default is not one)."""
        p: dict[str, Any] = {}
        for pname, choices in self.parameters().items():
            knob = pname.rsplit(":", 1)[1]
            default = LAYER_KNOBS[knob].default if knob in LAYER_KNOBS else choices[0]
            want = recipe.get(knob, default)
            if want == "min":
                p[pname] = LAYER_KNOBS[knob].most_aggressive(list(choices))
            else:
                p[pname] = want if want in choices else (default if default in choices else choices[0])
        return p

    def _uniform_name(self, candidate: Candidate) -> str:
        """``fp32``, ``int8``, ``fp16``, ``w0.5+int8``: what the configuration really is."""
        parts = []
        for knob, label, default in (("width", "w", 1.0), ("bits", "int", 32)):
            values = sorted(
                {candidate.value(lay.name, knob) for lay in self.layers if knob in lay.knobs}, reverse=True
            )
            if values and values != [default]:
                many = label + "/".join(f"{v:g}" for v in values)
                parts.append(value_label(knob, values[0]) if len(values) == 1 else many)
        return "+".join(parts) or "fp32"

    def summary(self) -> dict[str, Any]:
        return {
            "layers": [
                {"name": layer.name, "op": layer.op, "onnx_node": layer.onnx_node, "knobs": layer.knobs}
                for layer in self.layers
            ],
            "threads": self.threads,
            "study": {name: values for name, values in self.study.items() if len(values) > 1},
            "notes": self.notes,
            "ignored": self.ignored,
            "parameters": len(self.parameters()),
        }


def build_space(
    task: Task, preset: Preset, profile: DeviceProfile, threads: int | None = None
) -> SearchSpace:
    """Discover layers, then intersect preset values with what the profile says is real."""
    notes: list[str] = []
    allowed: dict[str, list[KnobValue]] = {}
    for knob_name, knob in LAYER_KNOBS.items():
        unnamed = list(knob.values) or [knob.default]
        wanted = preset.knobs.get(knob_name, profile.knobs.get(knob_name, unnamed))
        real = profile.knobs.get(knob_name, unnamed)
        kept = [v for v in wanted if v in real]
        dropped = [v for v in wanted if v not in real]
        if dropped:
            why = (
                profile.notes.get(knob_name) or profile.notes.get(f"{knob_name}={dropped[0]}") or "not listed"
            )
            notes.append(f"{knob_name} {dropped} not searched on {profile.name}: {why}")
        allowed[knob_name] = kept or [knob.default]

    if isinstance(task.source, Path):
        layers, ignored = _discover_onnx(task, allowed, notes)
    else:
        layers, ignored = _discover_torch(task, preset, allowed, notes)

    for layer in layers:
        for pattern, override in preset.overrides.items():
            if fnmatch.fnmatchcase(layer.name, pattern):
                for name, values in override.items():
                    if name in layer.knobs:
                        layer.knobs[name] = [v for v in values if v in layer.knobs[name]] or [
                            LAYER_KNOBS[name].default
                        ]

    quantized = any(8 in layer.knobs.get("bits", []) for layer in layers)
    args = (preset.runtime, preset.recipe, threads, quantized, has_transformer(task))
    study, study_notes = study_choices(profile, *args)
    return SearchSpace(
        layers, [int(t) for t in study.pop("runtime:threads")], notes + study_notes, ignored, study
    )


def _layers(
    found: Discovery,
    allowed: dict[str, list[KnobValue]],
    notes: list[str],
    preset: Preset | None = None,
) -> list[Layer]:
    """Ask every registered knob which layers it applies to, with which values; a name that is
    not a layer is a knob's own unit (a block), searched when the preset's patterns select it."""
    per_layer: dict[str, dict[str, list[KnobValue]]] = {name: {} for name in found.layers}
    units: dict[str, dict[str, list[KnobValue]]] = {}
    for knob in LAYER_KNOBS.values():
        if found.model is None and not isinstance(knob, OnnxKnob):
            continue
        values, knob_notes = knob.discover(found, allowed[knob.name])
        notes.extend(knob_notes)
        for name, vals in values.items():
            if name in per_layer:
                per_layer[name][knob.name] = vals
            elif preset is None or (_matches(name, preset.include) and not _matches(name, preset.keep)):
                units.setdefault(name, {})[knob.name] = vals
    layers = [
        Layer(name=name, op=node.op_type, onnx_node=node.name, knobs=per_layer[name])
        for name, node in found.nodes.items()
    ]
    return layers + [Layer(name=name, op=None, onnx_node=None, knobs=knobs) for name, knobs in units.items()]


def _discover_onnx(
    task: Task, allowed: dict[str, list[KnobValue]], notes: list[str]
) -> tuple[list[Layer], list[str]]:
    assert isinstance(task.source, Path)
    model = onnx.load(str(task.source), load_external_data=False)
    torch_only = [name for name, knob in LAYER_KNOBS.items() if not isinstance(knob, OnnxKnob)]
    if any(v != LAYER_KNOBS[k].default for k in torch_only for v in allowed[k]):
        listed = (
            f"{', '.join(torch_only[:-1])} and {torch_only[-1]}" if len(torch_only) > 1 else torch_only[0]
        )
        notes.append(
            f"{listed} need{'s' if len(torch_only) == 1 else ''} a torch model: "
            "an ONNX model gets bit-width and runtime knobs only"
        )
    nodes = {n.name or f"{n.op_type}_{i}": n for i, n in enumerate(weighted_nodes(model))}
    found = Discovery(None, task.example_inputs, task.calibration_feeds(), task.source, nodes)
    return _layers(found, allowed, notes), []


def _discover_torch(
    task: Task, preset: Preset, allowed: dict[str, list[KnobValue]], notes: list[str]
) -> tuple[list[Layer], list[str]]:
    model = task.model.eval()
    modules = prunable_layers(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fp32.onnx"
        try:
            export_onnx(model, task.example_inputs, path)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"the model does not export to ONNX: {error_line(exc)}") from None
        graph = onnx.load(str(path))
        nodes = layer_nodes(graph, set(modules))
        selected = [n for n in modules if _matches(n, preset.include) and not _matches(n, preset.keep)]
        unmapped = [n for n in selected if n not in nodes]
        if unmapped:
            notes.extend(_unmapped_notes(model, task.example_inputs, unmapped))
        outputs = output_nodes(graph)
        output_layers = [name for name, node in nodes.items() if node.name in outputs]
        kept = [n for n in modules if n not in selected]
        ignored = sorted(set(output_layers) | set(kept))
        searched = {n: nodes[n] for n in selected if n in nodes}
        found = Discovery(model, task.example_inputs, task.calibration_feeds(), path, searched, ignored)
        return _layers(found, allowed, notes, preset), ignored


def _unmapped_notes(model: torch.nn.Module, example_inputs: ModelInputs, unmapped: list[str]) -> list[str]:
    """One note per reason a Conv/Linear has no weighted node in the export, naming the layers."""
    called: set[str] = set()
    modules = {n: model.get_submodule(n) for n in unmapped}
    handles = [m.register_forward_pre_hook(lambda _m, _a, n=n: called.add(n)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            call_model(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    unused = [n for n in unmapped if n not in called]
    folded = [n for n in unmapped if n in called]
    notes = []
    if unused:
        notes.append(
            f"{len(unused)} layers not searched: not called in the forward pass (not in the ONNX "
            f"graph): {name_layers(unused)}"
        )
    if folded:
        notes.append(
            f"{len(folded)} layers not searched: called, but the export has no Conv/Gemm/MatMul with a "
            f"constant weight for them (folded or computed weights): {name_layers(folded)}"
        )
    return notes


def prunable_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Conv2d and Linear layers by qualified name: the layers that get knobs."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
