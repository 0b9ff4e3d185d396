"""Quantization recipes and session options as study-level knobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tiny_tasks import conv_task

from autotune.devices import RuntimeOptions
from autotune.devices._ort import session_options
from autotune.errors import UserError
from autotune.knobs import RECIPE_KNOBS, RUNTIME_KNOBS
from autotune.knobs._quantize import quantize_model
from autotune.knobs._recipe import Recipe, describe_study
from autotune.space._profiles import load_profile
from autotune.space._space import Candidate, Preset, build_space, load_preset
from autotune.task._evaluate import OrtRunner
from autotune.task._onnx_export import export_onnx, weighted_nodes


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "calibration"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    task = conv_task()
    path = tmp_path_factory.mktemp("m") / "fp32.onnx"
    export_onnx(task.model.eval(), task.example_inputs, path)
    return path, [n.name for n in weighted_nodes(onnx.load(str(path)))]


def test_the_default_recipe_is_the_fixed_one_and_first_of_every_knob() -> None:
    fixed = Recipe()
    assert (fixed.calibration, fixed.activation, fixed.per_channel, fixed.format) == (
        "minmax",
        "u8",
        True,
        "qdq",
    )
    assert not fixed.reduce_range and fixed.to_dict() == {} and fixed.describe() == ""
    for name, values in RECIPE_KNOBS.items():
        assert getattr(fixed, name) == values[0]
    defaults = RuntimeOptions()
    for name, values in RUNTIME_KNOBS.items():
        assert getattr(defaults, name) == values[0]
    # options added later are left out of the dict at their default: older cache keys stay valid
    assert set(defaults.to_dict()) == {"threads", "graph_optimization", "affinity", "precision"}
    assert RuntimeOptions.from_dict({"threads": 2, "unknown": 1}) == RuntimeOptions(threads=2)
    parallel = RuntimeOptions(threads=2, execution_mode="parallel")
    assert RuntimeOptions.from_dict(parallel.to_dict()) == parallel
    assert Candidate.from_dict({"layers": {}}).recipe == fixed  # records written before recipes


def test_each_recipe_builds_a_different_artifact_and_calibration_is_cached_per_method(
    model: tuple[Path, list[str]], cache: Path, tmp_path: Path
) -> None:
    path, nodes = model
    task = conv_task()
    digests = {}
    recipes = [
        Recipe(),
        Recipe(calibration="entropy"),
        Recipe(calibration="percentile"),
        Recipe(activation="s8"),
        Recipe(per_channel=False),
        Recipe(reduce_range=True),
        Recipe(format="qoperator"),
    ]
    for recipe in recipes:
        out = tmp_path / f"{recipe.describe() or 'fixed'}.onnx"
        quantize_model(path, out, dict.fromkeys(nodes, 8), task.calibration, recipe)
        digests[recipe] = out.read_bytes()
        assert 0 <= task.evaluate(OrtRunner(out)) <= 100
    # every knob changes the artifact (entropy's ranges land on this tiny model's ReLU inputs,
    # whose scales the QDQ quantizer takes from the ReLU output: it may equal MinMax here)
    others = [r for r in recipes if r.calibration != "entropy"]
    assert len({digests[r] for r in others}) == len(others)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "qoperator.onnx")).graph.node}
    assert "QLinearConv" in ops
    # one calibration per method on this model: the later recipes re-used the MinMax ranges
    files = sorted(cache.glob("*.json"))
    assert len(files) == 3
    stamps = [f.stat().st_mtime_ns for f in files]
    again = tmp_path / "again.onnx"
    quantize_model(path, again, dict.fromkeys(nodes, 8), task.calibration, Recipe(calibration="entropy"))
    assert again.read_bytes() == digests[Recipe(calibration="entropy")]
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("*.json"))] == stamps
    # other calibration data: calibrated again
    other = [(np.asarray(b[0]) * 2,) for b in task.calibration]
    quantize_model(path, again, dict.fromkeys(nodes, 8), other, Recipe(calibration="entropy"))
    assert len(list(cache.glob("*.json"))) == 4


def test_ort_preprocessing_keeps_fp32_layers_fp32(
    model: tuple[Path, list[str]], cache: Path, tmp_path: Path
) -> None:
    path, nodes = model
    out = tmp_path / "mixed.onnx"
    quantize_model(path, out, {nodes[1]: 8}, conv_task().calibration, Recipe(preprocess="optimize"))
    graph = onnx.load(str(out)).graph
    weights_quantized = {
        n.input[1]
        for n in graph.node
        if n.op_type in ("Conv", "Gemm") and n.input[1].endswith("DequantizeLinear_Output")
    }
    assert len(weights_quantized) == 1


def test_space_searches_recipes_where_int8_is_possible_and_baselines_keep_the_fixed_recipe(
    cache: Path,
) -> None:
    task = conv_task()
    space = build_space(task, Preset(knobs={"bits": [32, 8]}), load_profile("cpu"))
    params = space.parameters()
    assert params["recipe:calibration"] == ["minmax", "entropy", "percentile"]
    assert params["recipe:per_channel"] == [True, False]
    # one thread: parallel execution is the same as sequential, so it is not searched
    assert "runtime:execution_mode" not in params and "runtime:threads" not in params
    assert "recipe:optimizer" not in params  # no attention / LayerNorm / GELU in this model
    assert any("execution_mode" in n for n in space.notes) and any("transformer" in n for n in space.notes)
    for name, p in space.baselines().items():
        c = space.candidate(p)
        assert c.recipe == Recipe() and c.runtime == RuntimeOptions(), name
    c = space.candidate({"recipe:calibration": "entropy", "recipe:per_channel": False})
    assert c.recipe == Recipe(calibration="entropy", per_channel=False)
    assert Candidate.from_dict(c.to_dict()) == c
    # no int8 anywhere: no recipe knobs
    fp = build_space(task, Preset(knobs={"bits": [32]}), load_profile("cpu"))
    assert not any(k.startswith("recipe:") for k in fp.parameters())


def test_multicore_profile_searches_session_options(cache: Path) -> None:
    task = conv_task()
    space = build_space(task, Preset(knobs={"bits": [32, 8]}), load_profile("cpu-multicore"))
    params = space.parameters()
    assert params["runtime:threads"] == [1, 2]
    assert params["runtime:execution_mode"] == ["sequential", "parallel"]
    assert params["runtime:graph_optimization"] == ["all", "extended", "basic"]
    c = space.candidate(
        {"runtime:threads": 2, "runtime:execution_mode": "parallel", "runtime:graph_optimization": "basic"}
    )
    assert c.runtime == RuntimeOptions(threads=2, execution_mode="parallel", graph_optimization="basic")
    assert describe_study(c.runtime, c.recipe, False) == "threads 2 basic parallel"
    so = session_options(c.runtime)
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL and so.inter_op_num_threads == 2
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    # --threads fixes the count
    fixed = build_space(task, Preset(knobs={"bits": [32, 8]}), load_profile("cpu-multicore"), threads=2)
    assert fixed.threads == [2] and "runtime:threads" not in fixed.parameters()


def test_presets_narrow_study_knobs_and_bad_values_are_refused(tmp_path: Path, cache: Path) -> None:
    preset = tmp_path / "p.yaml"
    preset.write_text(
        "recipe:\n  calibration: [minmax, entropy]\n  per_channel: [true]\nruntime:\n  threads: [2]\n"
    )
    space = build_space(conv_task(), load_preset(str(preset)), load_profile("cpu-multicore"))
    assert space.parameters()["recipe:calibration"] == ["minmax", "entropy"]
    assert "recipe:per_channel" not in space.parameters() and space.threads == [2]
    preset.write_text("runtime:\n  graph_optimization: [all, disable]\n")
    space = build_space(conv_task(), load_preset(str(preset)), load_profile("cpu-multicore"))
    assert "runtime:graph_optimization" not in space.parameters()
    assert (
        "runtime.graph_optimization ['disable'] not searched on cpu-multicore: not in its profile"
        in space.notes
    )
    preset.write_text("recipe:\n  calibration: [kl]\n")
    with pytest.raises(UserError, match=r"invalid recipe\.calibration value 'kl'"):
        load_preset(str(preset))
    preset.write_text("recipe:\n  calibrate: [minmax]\n")
    with pytest.raises(UserError, match="did you mean 'calibration'"):
        load_preset(str(preset))


def test_searched_session_options_are_measured_and_exported(tmp_path: Path, cache: Path) -> None:
    """Every trial is measured with its own session options; the export carries the winner's."""
    import json
    from dataclasses import replace

    import autotune
    from autotune.devices import Protocol

    result = autotune.search(
        conv_task(),
        budget="150%",  # generous: this test is about the searched session options, not the budget
        device="cpu-multicore",
        space=str(_preset(tmp_path)),
        trials=8,
        out_dir=tmp_path / "runs",
        protocol=Protocol.quick(),
        progress=False,
        report=False,
        sampler="random",
    )
    seen = set()
    for t in result.trials:
        assert t.measurement.runtime == t.candidate.runtime.to_dict()
        seen.add((t.candidate.runtime.threads, t.candidate.runtime.execution_mode))
    assert {threads for threads, _ in seen} == {1, 2}
    best = result.best
    assert best is not None
    out = best.export(tmp_path / "best.onnx")
    record = json.loads(out.with_suffix(".json").read_text())
    options = record["session_options"]
    assert options["intra_op_num_threads"] == best.candidate.runtime.threads
    assert (
        options["execution_mode"]
        == {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}[best.candidate.runtime.execution_mode]
    )
    assert record["config"]["runtime"] == best.measurement.runtime
    assert record["quantization_recipe"]["calibration"] == best.candidate.recipe.calibration
    # a result whose measurement ran with other options is refused, not exported
    other = replace(best.measurement, runtime=RuntimeOptions(threads=3).to_dict())
    with pytest.raises(UserError, match="measured with"):
        replace(best, measurement=other).export(tmp_path / "wrong.onnx")


def _preset(tmp_path: Path) -> Path:
    preset = tmp_path / "session.yaml"
    preset.write_text(
        "knobs: {bits: [32, 8], width: [1.0]}\n"
        "runtime: {threads: [1, 2], execution_mode: [sequential, parallel]}\n"
        # reduce_range pinned: it is dropped on VNNI hosts, which would change the random draws
        "recipe: {calibration: [minmax, percentile], reduce_range: [false]}\n"
    )
    return preset


def test_gpu_provider_options_follow_the_runtime_knobs(tmp_path: Path) -> None:
    """The options dict is built without a GPU; the sessions that use it are tested below."""
    from autotune.devices.ort_gpu import OrtCudaDevice, OrtTensorrtDevice

    cuda = OrtCudaDevice().provider_options(None, {}, RuntimeOptions(cudnn_conv_algo_search="HEURISTIC"))
    assert cuda["cudnn_conv_algo_search"] == "HEURISTIC"
    assert (
        OrtCudaDevice().provider_options(None, {}, RuntimeOptions())["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    )

    class Traits:
        fp16 = qdq = sparse_2_4 = False

    trt = OrtTensorrtDevice(cache_dir=tmp_path).provider_options(
        Traits(), {"input": np.zeros((1, 3), np.float32)}, RuntimeOptions(precision="fp16")
    )
    assert trt["trt_fp16_enable"] is True and trt["trt_int8_enable"] is False
    assert load_profile("cuda").runtime["cudnn_conv_algo_search"] == ["EXHAUSTIVE", "HEURISTIC"]
    assert load_profile("tensorrt-gpu").runtime["precision"] == ["fp32", "fp16"]


def test_cuda_session_is_measured_with_the_searched_algo_search(model: tuple[Path, list[str]]) -> None:
    from autotune.devices import Protocol
    from autotune.devices.ort_gpu import OrtCudaDevice

    ok, why = OrtCudaDevice.available()
    if not ok:
        pytest.skip(f"ort-cuda: {why}")
    path, _ = model
    runtime = RuntimeOptions(cudnn_conv_algo_search="HEURISTIC")
    m = OrtCudaDevice().measure(
        path, {"input": np.zeros((1, 3, 16, 16), np.float32)}, runtime, Protocol.quick()
    )
    assert m.usable, m.error
    assert m.provider_options is not None and m.provider_options["cudnn_conv_algo_search"] == "HEURISTIC"
    assert m.runtime == runtime.to_dict()


def test_transformer_optimizer_is_a_knob_only_where_it_fuses_and_its_fusions_are_recorded(
    tmp_path: Path, cache: Path
) -> None:
    import torch
    from tiny_tasks import agreement_task

    from autotune.build._builder import ArtifactBuilder
    from autotune.knobs._recipe import fusions
    from autotune.task.zoo import TinyTransformer

    torch.manual_seed(0)
    task = agreement_task(TinyTransformer(), torch.randn(32, 16, 64), "tiny-transformer")
    space = build_space(task, Preset(knobs={"bits": [32, 8], "width": [1.0]}), load_profile("cpu"))
    assert space.parameters()["recipe:optimizer"] == ["none", "transformer"]
    builder = ArtifactBuilder(task, space, tmp_path / "artifacts")
    fp32 = builder.build(space.candidate({"recipe:optimizer": "transformer"}))
    fused = fusions(fp32.path)
    assert fused is not None and fused["SkipLayerNormalization"] > 0 and fused.get("Attention", 0) > 0
    assert task.evaluate(OrtRunner(fp32.path)) == 100.0  # fusions keep the fp32 function
    int8 = space.candidate({**space.baselines()["int8"], "recipe:optimizer": "transformer"})
    artifact = builder.build(int8)
    ops = {n.op_type for n in onnx.load(str(artifact.path)).graph.node}
    assert {"Attention", "DequantizeLinear"} <= ops and fusions(artifact.path) == fused
    assert fusions(builder.build(space.candidate(space.baselines()["int8"])).path) is None


def test_onnx_models_are_told_apart_by_their_ops(model: tuple[Path, list[str]], tmp_path: Path) -> None:
    from types import SimpleNamespace

    import torch

    from autotune.knobs._recipe import has_transformer
    from autotune.task.zoo import TinyTransformer

    path = tmp_path / "transformer.onnx"
    export_onnx(TinyTransformer().eval(), (torch.randn(1, 16, 64),), path)
    assert has_transformer(SimpleNamespace(source=path))
    assert not has_transformer(SimpleNamespace(source=model[0]))  # a CNN's ReduceMean is no LayerNorm


class MaskedAttention(torch.nn.Module):
    """One attention head whose padded keys get ``-inf`` before the Softmax, as Hugging Face
    models do: the exporter writes a Where with a ``-inf`` constant."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(16, 16) for _ in range(3))
        self.out = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(1, 2) / 4.0
        scores = scores.masked_fill(mask[:, None, :] == 0, float("-inf"))
        return self.out((scores.softmax(-1) @ self.v(x)).mean(1))


@pytest.mark.parametrize("calibration", ["minmax", "entropy", "percentile"])
def test_attention_masks_stay_float_and_every_calibrator_quantizes_around_them(
    calibration: str, cache: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = MaskedAttention().eval()
    x = torch.randn(32, 8, 16)
    mask = (torch.arange(8)[None, :] < torch.randint(2, 9, (32,))[:, None]).to(torch.int64)
    path = tmp_path / "attention.onnx"
    export_onnx(model, (x[:1], mask[:1]), path)
    graph = onnx.load(str(path))
    assert any(n.op_type == "Where" for n in graph.graph.node)
    out = tmp_path / "int8.onnx"
    batches = [(x[i : i + 8].numpy(), mask[i : i + 8].numpy()) for i in range(0, 32, 8)]
    quantize_model(path, out, dict.fromkeys([n.name for n in weighted_nodes(graph)], 8), batches,
                   Recipe(calibration=calibration))  # fmt: skip
    q = onnx.load(str(out)).graph
    made_by = {o: n for n in q.node for o in n.output}
    softmax = next(n for n in q.node if n.op_type == "Softmax")
    # the masked scores reach the Softmax in float: no int8 scale covers [-inf, x]
    assert made_by[softmax.input[0]].op_type not in ("DequantizeLinear", "QuantizeLinear")
    assert sum(n.op_type == "QuantizeLinear" for n in q.node) >= 4  # the Linear layers are int8
    feed = {"x": x.numpy(), "mask": mask.numpy()}
    names = [i.name for i in ort.InferenceSession(str(path)).get_inputs()]
    feed = dict(zip(names, feed.values(), strict=True))
    want = ort.InferenceSession(str(path)).run(None, feed)[0]
    got = ort.InferenceSession(str(out)).run(None, feed)[0]
    assert np.isfinite(got).all()
    # the int8 error of the Linear layers only
    assert np.abs(got - want).mean() < 0.05 * np.abs(want).mean(), np.abs(got - want).mean()
