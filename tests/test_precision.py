"""What the artifact really runs: the precision of each layer in onnxruntime's optimised graph.

onnxruntime (1.32 here) fuses a float Conv whose neighbours are int8 into a QLinearConv: the
candidate says fp32, the layer runs int8. The builder records what runs, and the summary, the
report and the export JSON show it.
"""

import json
import tempfile
from pathlib import Path

import optuna
import pytest
from tiny_tasks import conv_task

import autotune
from autotune.build import ArtifactBuilder
from autotune.devices import INT8_KERNELS, Protocol, RuntimeOptions, optimized_graph
from autotune.space import Candidate, SearchSpace, build_space, load_preset, load_profile
from autotune.task import Task

#: every layer int8 but conv1, which sits between two int8 layers
MIXED = {"stem": 8, "conv1": 32, "dw": 8, "conv2": 8, "fc": 8}


@pytest.fixture(scope="module")
def setup() -> tuple[Task, SearchSpace, ArtifactBuilder]:
    task = conv_task()
    space = build_space(task, load_preset(None), load_profile("cpu"))
    builder = ArtifactBuilder(task, space, Path(tempfile.mkdtemp()) / "artifacts", inspect=True)
    return task, space, builder


def _from_graph(path: Path, space: SearchSpace, runtime: RuntimeOptions) -> dict[str, str]:
    """Independently of the builder: a layer runs int8 when a quantized kernel of the optimised
    graph carries its node's name (the optimiser appends ``_token_N``), else fp32."""
    graph = optimized_graph(path, runtime)
    quantized = [n.name for n in graph.node if n.op_type in INT8_KERNELS]
    return {
        layer.name: "int8" if any(q.startswith(layer.onnx_node) for q in quantized) else "fp32"
        for layer in space.layers
    }


def test_the_recorded_precision_is_the_optimised_graphs(setup) -> None:
    _, space, builder = setup
    candidate = Candidate(layers={layer: {"bits": b} for layer, b in MIXED.items() if b != 32})
    artifact = builder.build(candidate)
    assert artifact.precision == _from_graph(artifact.path, space, candidate.runtime)
    # onnxruntime fuses the float conv1 between its int8 neighbours: it runs int8
    assert artifact.precision == dict.fromkeys(MIXED, "int8")
    assert "inspect" in artifact.timings


def test_without_graph_optimisation_int8_layers_run_in_float(setup) -> None:
    _, space, builder = setup
    off = RuntimeOptions(graph_optimization="disable")
    candidate = Candidate(layers={"stem": {"bits": 8}}, runtime=off)
    artifact = builder.build(candidate)
    assert artifact.precision == _from_graph(artifact.path, space, off) == dict.fromkeys(MIXED, "fp32")


def test_summary_report_and_export_show_what_runs(setup, tmp_path: Path) -> None:
    task, space, _ = setup
    run_dir = tmp_path / "runs" / "mixed"
    run_dir.mkdir(parents=True)
    study = optuna.create_study(
        study_name="mixed",
        storage=f"sqlite:///{run_dir / 'study.db'}",
        directions=["maximize", "minimize", "minimize"],
    )
    params = {name: choices[0] for name, choices in space.parameters().items()}
    params.update({f"{layer}:bits": b for layer, b in MIXED.items()})
    study.enqueue_trial(params)  # runs first, before the baselines
    result = autotune.search(
        task,
        budget="100%",
        trials=1,
        out_dir=tmp_path / "runs",
        study_name="mixed",
        protocol=Protocol.quick(),
        progress=False,
        report=tmp_path / "report.html",
    )
    (t,) = result.trials
    assert t.candidate.value("conv1", "bits") == 32
    assert t.precision == dict.fromkeys(MIXED, "int8")
    assert t.precision_changes == {"conv1": ("fp32", "int8")}
    assert t.as_run.value("conv1", "bits") == 8
    assert "int8x5" in t.describe() and "onnxruntime runs conv1 int8 (chosen fp32)" in t.describe()
    summary = result.summary()
    assert "onnxruntime runs conv1 int8 (chosen fp32)" in summary
    assert "precision as run" in summary and "fp32->int8" in summary
    assert "conv1 int8 (chosen fp32)" in (tmp_path / "report.html").read_text()
    info = json.loads(t.export(tmp_path / "mixed.onnx").with_suffix(".json").read_text())
    assert "conv1" not in info["config"]["layers"]  # the choice stays as chosen (fp32: the default)
    assert info["precision"]["runs"]["conv1"] == "int8"
    assert info["precision"]["changed"] == {"conv1": {"chosen": "fp32", "runs": "int8"}}
    assert info["precision"]["config_as_run"]["layers"]["conv1"] == {"bits": 8}
