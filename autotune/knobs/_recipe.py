"""Study-level knobs: the quantization recipe, and which recipe and session options a study searches.

A :class:`Recipe` says *how* the int8 layers of a candidate are quantized (calibration method,
activation type, per-channel weights, ``reduce_range``, ORT's pre-processing, QDQ or QOperator)
and whether onnxruntime's transformer fusions run first. Its defaults are the fixed recipe autotune
always used (QDQ, per channel, u8 activations, s8 weights, MinMax), so a candidate that leaves the
recipe alone is built exactly as before.

Calibration is the slow part: its ranges are cached per (prepared model, method, calibration
data) in ``cache_root()/calibration`` through onnxruntime's own ``calibration_cache_path``, so a
recipe is calibrated once per model, not once per trial.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autotune._util import cache_root
from autotune.knobs._base import KnobValue
from autotune.knobs._study import RECIPE_KNOBS, RUNTIME_KNOBS
from autotune.records import Measurement, RuntimeOptions
from autotune.task import Task

if TYPE_CHECKING:  # a later stage: the profile and candidate types only
    from autotune.space import Candidate, DeviceProfile

FUSIONS_KEY = "autotune.fusions"  # model metadata: what the transformer optimizer fused


@dataclass(frozen=True)
class Recipe:
    """How int8 layers are quantized; the defaults are autotune's fixed recipe."""

    calibration: str = "minmax"  # MinMax, Entropy or Percentile (onnxruntime CalibrationMethod)
    activation: str = "u8"  # activation type, u8 or s8 (asymmetric either way); weights are s8
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: avoids u8*s8 saturation on CPUs without VNNI
    preprocess: str = "shapes"  # ORT quant pre-processing: "shapes" (inference only) or "optimize"
    format: str = "qdq"  # QDQ or QOperator (QLinearConv ... written directly)
    optimizer: str = "none"  # "transformer": onnxruntime.transformers fusions before quantization

    def to_dict(self) -> dict[str, Any]:
        """Only what differs from the fixed recipe (so older records read back the same)."""
        return {k: v for k, v in asdict(self).items() if v != RECIPE_KNOBS[k][0]}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Recipe:
        return cls(**{k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        """e.g. ``entropy s8 per-tensor``; empty for the fixed recipe."""
        words = {"per_channel": "per-tensor", "reduce_range": "reduce-range", "preprocess": "ort-preprocess"}
        return " ".join(words.get(k, str(v)) for k, v in self.to_dict().items())


#: ops onnxruntime's transformer optimizer fuses around (LayerNorm, GELU's Erf), or already fused;
#: attention is a Softmax whose output feeds a MatMul
TRANSFORMER_OPS = frozenset({"LayerNormalization", "Erf", "Gelu", "Attention", "MultiHeadAttention"})
#: torch modules that export to those ops
TRANSFORMER_MODULES = frozenset({"MultiheadAttention", "LayerNorm", "GELU", "TransformerEncoderLayer"})


def has_transformer(task: Task) -> bool:
    """Attention, LayerNorm or GELU in the task's model: where the transformer optimizer applies."""
    if isinstance(task.source, Path):
        import onnx

        nodes = onnx.load(str(task.source), load_external_data=False).graph.node
        softmax = {o for n in nodes if n.op_type == "Softmax" for o in n.output}
        attention = any(n.op_type == "MatMul" and softmax & set(n.input) for n in nodes)
        return attention or bool({n.op_type for n in nodes} & TRANSFORMER_OPS)
    return any(type(m).__name__ in TRANSFORMER_MODULES for m in task.model.modules())


def describe_study(runtime: RuntimeOptions, recipe: Recipe, quantized: bool) -> str:
    """``threads 2 parallel`` (+ the recipe, when some layer is int8): what differs from the defaults."""
    options = {k: v for k, v in runtime.to_dict().items() if k in RUNTIME_KNOBS and k != "threads"}
    words = [f"threads {runtime.threads}", *(str(v) for k, v in options.items() if v != RUNTIME_KNOBS[k][0])]
    recipe_words = recipe.describe() if quantized or recipe.optimizer != "none" else ""
    return " ".join([*words, recipe_words]).strip()


def host_has_vnni() -> bool:
    """x86 dot-product instructions (u8*s8 without saturation): then reduce_range buys nothing."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def study_choices(
    profile: DeviceProfile,
    preset_runtime: dict[str, list[KnobValue]],
    preset_recipe: dict[str, list[KnobValue]],
    threads: int | None,
    quantized: bool,
    transformer: bool,
) -> tuple[dict[str, list[KnobValue]], list[str]]:
    """Optuna parameter ``runtime:NAME`` / ``recipe:NAME`` -> values (default first), and notes.

    A value is searched when the profile lists it and the preset (if it names the knob) wants it.
    Recipe knobs only where some layer may be int8; ``reduce_range`` not on a local CPU with
    VNNI; the transformer optimizer only on a model with attention, LayerNorm or GELU.
    """
    notes: list[str] = []
    out: dict[str, list[KnobValue]] = {}
    for section, table, real, wanted in (
        ("runtime", RUNTIME_KNOBS, profile.runtime, preset_runtime),
        ("recipe", RECIPE_KNOBS, profile.recipe, preset_recipe),
    ):
        for name, valid in table.items():
            listed = list(real.get(name, [valid[0]]))
            values = [v for v in wanted.get(name, listed) if v in listed] or listed[:1]
            dropped = [v for v in wanted.get(name, []) if v not in listed]
            if dropped:
                notes.append(f"{section}.{name} {dropped} not searched on {profile.name}: not in its profile")
            out[f"{section}:{name}"] = values
    if threads is not None:
        out["runtime:threads"] = [threads]
    if max(int(t) for t in out["runtime:threads"]) == 1 and len(out["runtime:execution_mode"]) > 1:
        out["runtime:execution_mode"] = ["sequential"]
        notes.append("execution_mode parallel not searched: it needs more than one thread")
    if not quantized and any(len(out[f"recipe:{k}"]) > 1 for k in RECIPE_KNOBS if k != "optimizer"):
        notes.append("quantization recipe not searched: no layer may be int8 here")
        for k in RECIPE_KNOBS:
            if k != "optimizer":
                out[f"recipe:{k}"] = [RECIPE_KNOBS[k][0]]
    if True in out["recipe:reduce_range"] and profile.backend == "ort-cpu" and host_has_vnni():
        out["recipe:reduce_range"] = [False]
        notes.append("reduce_range not searched: this CPU has VNNI (no u8*s8 saturation to avoid)")
    if "transformer" in out["recipe:optimizer"] and not transformer:
        out["recipe:optimizer"] = ["none"]
        notes.append("transformer optimizer not searched: the model has no attention, LayerNorm or GELU")
    return out, notes


def from_params(params: dict[str, Any], choices: dict[str, list[KnobValue]]) -> tuple[RuntimeOptions, Recipe]:
    """The runtime options and recipe of Optuna params; a knob not in ``params`` takes its first choice."""

    def pick(section: str, name: str) -> Any:
        key = f"{section}:{name}"
        return params.get(key, choices[key][0]) if key in choices else None

    runtime = {k: v for k in RUNTIME_KNOBS if (v := pick("runtime", k)) is not None}
    recipe = {k: v for k in RECIPE_KNOBS if (v := pick("recipe", k)) is not None}
    runtime["threads"] = int(runtime.get("threads", 1))
    return RuntimeOptions(**runtime), Recipe(**recipe)


def deployment(
    runtime: RuntimeOptions, measured: dict[str, Any], provider_options: dict[str, str] | None = None
) -> dict[str, Any]:
    """The session options a deployment must use: those the winner was measured with.

    ``measured``: the measurement's runtime record. Raises ValueError when it differs from
    ``runtime``: a searched option never reaches the result unmeasured.
    """
    if measured and RuntimeOptions.from_dict(measured) != runtime:
        raise ValueError(f"measured with {measured}, not with its own session options {runtime.to_dict()}")
    from autotune.devices import session_options

    so = session_options(runtime)
    out: dict[str, Any] = {
        "intra_op_num_threads": so.intra_op_num_threads,
        "inter_op_num_threads": so.inter_op_num_threads,
        "execution_mode": so.execution_mode.name,
        "graph_optimization_level": so.graph_optimization_level.name,
    }
    if provider_options is not None:  # GPU execution providers: as measured
        out["provider_options"] = provider_options
    return out


# -- calibration cache -----------------------------------------------------------------------
def calibration_cache(prepared: Path, method: str, calibration: Sequence[Any]) -> Path:
    """Where the ranges of ``prepared`` calibrated with ``method`` on ``calibration`` are kept.

    ``calibration``: batches as tuples of arrays or dicts by input name; names, dtypes and
    shapes are part of the key (int64 ids and their float casts are different data).
    """
    import onnxruntime

    h = hashlib.sha256()
    h.update(Path(prepared).read_bytes())
    h.update(f"{method}|{onnxruntime.__version__}".encode())
    for batch in calibration:
        items = sorted(batch.items()) if isinstance(batch, Mapping) else list(enumerate(batch))
        for name, a in items:
            a = np.ascontiguousarray(a)
            h.update(f"{name}|{a.dtype}|{a.shape}".encode())
            h.update(a.tobytes())
    directory = cache_root() / "calibration"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{h.hexdigest()[:32]}.json"


def publish(tmp: Path, final: Path) -> None:
    """Move a freshly written cache file into place atomically (parallel workers share it)."""
    if tmp.is_file() and not final.exists():
        os.replace(tmp, final)
    tmp.unlink(missing_ok=True)


def fusions(path: Path) -> dict[str, int] | None:
    """The fusions recorded in an artifact (None: the optimizer did not run on it)."""
    import onnx

    for prop in onnx.load(str(path), load_external_data=False).metadata_props:
        if prop.key == FUSIONS_KEY:
            return dict(json.loads(prop.value))
    return None


def export_fields(candidate: Candidate, m: Measurement, artifact: Path, number: int) -> dict[str, Any]:
    """What result.TrialResult.export adds: session options, recipe, fusions."""
    from autotune.errors import UserError

    try:
        options = deployment(candidate.runtime, m.runtime, m.provider_options)
    except ValueError as exc:
        raise UserError(f"trial {number}: {exc}") from None
    out = {"session_options": options, "quantization_recipe": asdict(candidate.recipe)}
    fused = fusions(artifact)
    if fused is not None:
        out["fusions"] = fused
    return out
