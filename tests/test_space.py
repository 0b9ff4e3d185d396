"""Layer discovery on architectures the search must handle, presets and device profiles."""

from pathlib import Path

import pytest
import torch
from tiny_tasks import conv_task

from autotune.build._builder import ArtifactBuilder
from autotune.errors import UserError
from autotune.space._profiles import available_profiles, load_profile
from autotune.space._space import Candidate, build_space, load_preset
from autotune.task._task import Task
from autotune.task.zoo import MLP, ConcatNet, TinyTransformer, resnet18


def task_for(model: torch.nn.Module, x: torch.Tensor) -> Task:
    return Task(source=model.eval(), example_inputs=(x,), evaluate=lambda r: 0.0)


@pytest.fixture(scope="module")
def cpu() -> object:
    return load_profile("cpu")


def test_every_conv_and_linear_becomes_a_layer_and_the_head_keeps_its_width(cpu: object) -> None:
    space = build_space(task_for(resnet18(10), torch.randn(1, 3, 64, 64)), load_preset(None), cpu)
    names = [layer.name for layer in space.layers if layer.op is not None]
    assert len(names) == 21  # 20 convs (incl. 3 downsample) + fc
    # and the depth knob's units: the residual blocks whose input and output shapes are equal
    blocks = {layer.name: layer.knobs for layer in space.layers if layer.op is None}
    assert list(blocks) == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert all(knobs == {"depth": ["keep", "drop"]} for knobs in blocks.values())
    assert "fc" in names and "layer2.0.downsample.0" in names
    by_name = {layer.name: layer for layer in space.layers}
    assert "width" not in by_name["fc"].knobs  # the classifier's outputs are the interface
    # residual adds couple conv1 with every block's second conv: one width knob per group
    widths = [layer.name for layer in space.layers if "width" in layer.knobs]
    assert "layer1.0.conv1" in widths and "layer1.0.conv2" not in widths
    assert by_name["fc"].op == "Gemm" and 4 not in by_name["fc"].knobs["bits"]
    assert by_name["conv1"].knobs["bits"] == [32, 8]  # int4 is MatMul-only
    # the CPU profile removes sparsity and says why
    assert all(layer.knobs["sparsity"] == [0.0] for layer in space.layers if layer.op is not None)
    assert any("sparsity" in note and "do not reduce latency" in note for note in space.notes)


def test_transformer_linears_export_as_matmul_and_get_int4(cpu: object) -> None:
    space = build_space(task_for(TinyTransformer(), torch.randn(1, 16, 64)), load_preset(None), cpu)
    matmuls = [layer for layer in space.layers if layer.op == "MatMul"]
    assert len(matmuls) >= 8
    assert all(4 in layer.knobs["bits"] for layer in matmuls)


def test_concat_and_mlp_are_discovered(cpu: object) -> None:
    concat = build_space(task_for(ConcatNet(), torch.randn(1, 1, 32, 32)), load_preset(None), cpu)
    assert any("width" in layer.knobs for layer in concat.layers)
    mlp = build_space(task_for(MLP(), torch.randn(1, 64)), load_preset(None), cpu)
    assert [layer.op for layer in mlp.layers].count("Gemm") == len(mlp.layers)


def test_preset_narrows_values_and_keeps_layers(tmp_path: Path, cpu: object) -> None:
    preset = tmp_path / "p.yaml"
    preset.write_text(
        "knobs: {width: [1.0, 0.5], bits: [32, 8]}\n"
        "layers:\n  keep: ['layer4*']\n  overrides:\n    conv1: {bits: [32]}\n"
    )
    space = build_space(task_for(resnet18(10), torch.randn(1, 3, 64, 64)), load_preset(str(preset)), cpu)
    names = [layer.name for layer in space.layers]
    assert not any(n.startswith("layer4") for n in names)
    by_name = {layer.name: layer for layer in space.layers}
    assert by_name["conv1"].knobs["bits"] == [32]
    assert by_name["layer1.0.conv1"].knobs == {"bits": [32, 8], "width": [1.0, 0.5], "sparsity": [0.0]}
    assert "conv1:bits" not in space.parameters()


def test_profile_with_sparsity_offers_two_four_only_where_it_fits(tmp_path: Path) -> None:
    profile = tmp_path / "gpu.yaml"
    profile.write_text("backend: ort-cpu\nknobs: {sparsity: [0.0, 0.5, '2:4'], bits: [32, 16, 8]}\n")
    space = build_space(
        task_for(ConcatNet(), torch.randn(1, 1, 32, 32)), load_preset(None), load_profile(str(profile))
    )
    by_op = {layer.name: layer.knobs["sparsity"] for layer in space.layers}
    first = space.layers[0]  # 1 input channel: no 2:4 groups
    assert "2:4" not in by_op[first.name] and 0.5 in by_op[first.name]
    assert any("2:4" in s for s in by_op.values())


def test_baselines_are_distinct_and_valid(cpu: object) -> None:
    space = build_space(task_for(resnet18(10), torch.randn(1, 3, 64, 64)), load_preset(None), cpu)
    baselines = space.baselines()
    assert list(baselines) == [
        "fp32",
        "int8",
        "floor",  # width 0.25, int8 and every residual block dropped: no uniform baseline is that
        "floor-fp32",  # the same in fp32: int8 does not pay on every CPU's small layers
        "w0.75",
        "w0.5",
        "w0.75+int8",
        "w0.5+int8",
        "w0.25",
        "w0.25+int8",
    ]
    floor = space.candidate(baselines["floor"])
    assert floor.value("layer3.1", "depth") == "drop" and floor.value("layer1.0.conv1", "width") == 0.25
    assert "dropx5" in floor.describe()
    floor32 = space.candidate(baselines["floor-fp32"])
    assert floor32.value("conv1", "bits") == 32 and floor32.value("layer3.1", "depth") == "drop"
    params = space.parameters()
    for values in baselines.values():
        assert all(v in params[k] for k, v in values.items())
    int8 = space.candidate(baselines["w0.5+int8"])
    assert int8.value("conv1", "bits") == 8 and int8.value("layer1.0.conv1", "width") == 0.5


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("knobs: {widht: [1.0]}", "did you mean 'width'"),
        ("knob: {width: [1.0]}", "did you mean 'knobs'"),
        ("knobs: {width: [1.5]}", "invalid width value 1.5"),
        ("knobs: {bits: [7]}", "invalid bits value 7"),
        ("knobs: {width: 0.5}", "non-empty list"),
        ("knobs: [width", "malformed YAML"),
        ("- a\n- b", "expected a mapping"),
    ],
)
def test_bad_preset_is_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_preset(str(path))
    assert needle in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_device_and_preset_list_the_choices() -> None:
    with pytest.raises(UserError, match="cpu"):
        load_profile("nosuch")
    with pytest.raises(UserError, match="default"):
        load_preset("nosuch")
    assert "cpu" in available_profiles()


def test_task_source_is_a_torch_model_or_an_onnx_file(tmp_path: Path) -> None:
    model = MLP().eval()
    torch_task = task_for(model, torch.randn(1, 64))
    assert torch_task.model is model
    onnx_task = Task(source=str(tmp_path / "m.onnx"), example_inputs=(torch.randn(1, 64),), evaluate=len)
    assert onnx_task.source == tmp_path / "m.onnx"
    with pytest.raises(TypeError, match="ONNX file"):
        _ = onnx_task.model


def test_ctrl_c_swallowed_by_a_library_still_stops_the_build(tmp_path: Path, cpu: object) -> None:
    task = conv_task()

    def finetune(student: torch.nn.Module, teacher: torch.nn.Module) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:  # torch-pruning's tracer: a bare except, then a retry that fails
            raise TypeError("the retry failed too")  # noqa: B904

    task.finetune = finetune
    space = build_space(task, load_preset(None), cpu)  # type: ignore[arg-type]
    layer = next(layer.name for layer in space.layers if len(layer.knobs.get("width", [])) > 1)
    with pytest.raises(KeyboardInterrupt):
        ArtifactBuilder(task, space, tmp_path).build(Candidate({layer: {"width": 0.5}}))


class SharedWeights(torch.nn.Module):
    """Two convs with equal weights (as zero-initialised last BatchNorms make them in timm's
    ResNets): the exporter stores the tensor once and feeds the second conv an Identity of it.
    And a layer the forward pass never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.unused = torch.nn.Linear(8, 8)
        self.fc = torch.nn.Linear(8, 10)
        with torch.no_grad():
            self.b.weight.copy_(self.a.weight)
            self.b.bias.copy_(self.a.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a(x)) + torch.relu(self.b(x))
        return self.fc(x.mean((2, 3)))


def test_layers_sharing_an_exported_weight_are_found_and_lost_layers_are_named(cpu: object) -> None:
    space = build_space(task_for(SharedWeights(), torch.randn(1, 8, 16, 16)), load_preset(None), cpu)
    by_name = {layer.name: layer for layer in space.layers}
    assert by_name["b"].onnx_node == "/b/Conv" and by_name["b"].knobs["bits"] == [32, 8]
    assert [n for n in space.notes if "not searched:" in n and "layers" in n] == [
        "1 layers not searched: not called in the forward pass (not in the ONNX graph): unused"
    ]


def test_a_channel_grouping_over_its_time_limit_leaves_width_out_and_the_rest_searched(
    cpu: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch-pruning's grouping can run for hours on a long residual stream: discovery gives it a
    bounded time, then goes on without width and says why."""
    import autotune.knobs._width as width

    monkeypatch.setattr(width, "GROUPING_LIMIT_S", 1e-4)
    space = build_space(conv_task(), load_preset(None), cpu)  # type: ignore[arg-type]
    assert not any("width" in layer.knobs for layer in space.layers)
    assert any("bits" in layer.knobs for layer in space.layers)
    assert any(
        n.startswith("width not searched: torch-pruning's channel analysis took over") for n in space.notes
    )
    monkeypatch.setattr(width, "GROUPING_LIMIT_S", 120.0)
    assert any("width" in layer.knobs for layer in build_space(conv_task(), load_preset(None), cpu).layers)  # type: ignore[arg-type]


def test_time_limit_bounds_the_main_thread_only() -> None:
    import threading
    import time

    from autotune._util import TimeLimit, time_limit

    with pytest.raises(TimeLimit), time_limit(0.05):
        time.sleep(5)  # interrupted, not slept through
    done: list[bool] = []

    def elsewhere() -> None:
        with time_limit(0.01):  # no SIGALRM off the main thread: runs to the end
            time.sleep(0.05)
        done.append(True)

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert done == [True]
