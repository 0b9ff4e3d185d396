"""The depth knob: residual blocks found generically, dropped as identities, built and exported."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from autotune.build._builder import ArtifactBuilder
from autotune.knobs._depth import Skip, drop_blocks, residual_blocks
from autotune.space._profiles import load_profile
from autotune.space._space import Candidate, build_space, load_preset
from autotune.study._guide import Reference, infeasible_message
from autotune.task._task import Task
from autotune.task.zoo import ConcatNet, resnet18


class PreNorm(nn.Module):
    """A ViT block: two residual adds in a row, neither inside a child module."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn, self.mlp = (
            nn.Linear(d, d),
            nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


class SubLayer(nn.Module):
    """BERT's attention output: post-norm ``LayerNorm(x + f(x))``, residual on its own."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.f, self.norm = nn.Linear(d, d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.f(x))


class PostNorm(nn.Module):
    """A BERT layer: a residual sub-layer, then an add of its own; returns a 1-tuple, keyword input."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.attention, self.ffn, self.norm = SubLayer(d), nn.Linear(d, d), nn.LayerNorm(d)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        h = self.attention(hidden_states)
        return (self.norm(h + self.ffn(h)),)


class Gate(nn.Module):
    """``x * sigmoid(f(x))``: same shape, but not residual."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.f = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.f(x))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.blocks = nn.Sequential(PreNorm(), PreNorm(), Gate())
        self.encoder = nn.ModuleList([PostNorm(), PostNorm()])
        self.shared = PreNorm()
        self.down = nn.Linear(16, 4)  # changes the shape: never a block
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        for layer in self.encoder:
            x = layer(hidden_states=x)[0]
        x = self.shared(self.shared(x))  # one module called twice: dropping it drops both calls
        return self.head(torch.relu(self.down(x)).mean(1))


def test_blocks_are_the_outermost_modules_with_a_residual_add_of_their_own() -> None:
    blocks, left_out = residual_blocks(Net().eval(), (torch.randn(1, 5, 8),))
    # not the Sequential (its adds are its children's), not the gate, not BERT's sub-layer
    assert [b.name for b in blocks] == ["blocks.0", "blocks.1", "encoder.0", "encoder.1"]
    by_name = {b.name: b for b in blocks}
    assert by_name["encoder.0"].arg == "hidden_states" and by_name["encoder.0"].tuple_len == 1
    assert by_name["blocks.0"].arg == 0 and by_name["blocks.0"].tuple_len == 0
    assert left_out == {"shared": "called more than once"}


def test_a_dropped_block_returns_its_input_as_the_caller_expects() -> None:
    model = Net().eval()
    x = torch.randn(1, 5, 8)
    blocks, _ = residual_blocks(model, (x,))
    drop_blocks(model, blocks)
    assert isinstance(model.blocks[0], Skip) and isinstance(model.encoder[1], Skip)
    assert model(x).shape == (1, 3)
    stem = model.stem(x)
    assert torch.equal(model.blocks(stem), model.blocks[2](stem))  # only the gate runs


def test_frozen_parameters_and_training_mode_are_left_as_they_were() -> None:
    model = Net().train()
    model.stem.weight.requires_grad_(False)
    blocks, _ = residual_blocks(model, (torch.randn(1, 5, 8),))
    assert len(blocks) == 4
    assert model.training and not model.stem.weight.requires_grad


def _task(model: nn.Module, x: torch.Tensor) -> Task:
    return Task(source=model.eval(), example_inputs=(x,), evaluate=lambda r: 0.0)


def test_dropped_blocks_build_into_a_smaller_graph_with_the_other_knobs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    task = _task(resnet18(10, width=16), x)
    space = build_space(task, load_preset(None), load_profile("cpu"))
    blocks = [layer.name for layer in space.layers if "depth" in layer.knobs]
    assert blocks == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert all(layer.op is None and layer.onnx_node is None for layer in space.layers if layer.name in blocks)
    summary = {layer["name"]: layer for layer in space.summary()["layers"]}
    assert summary["layer2.1"]["op"] is None and summary["layer2.1"]["knobs"] == {"depth": ["keep", "drop"]}

    builder = ArtifactBuilder(task, space, tmp_path / "artifacts", keep_unrecovered=False)
    full = onnx.load(str(builder.build(Candidate(layers={})).path))
    layers = {
        "layer2.1": {"depth": "drop"},
        "layer3.1": {"depth": "drop"},
        "layer1.0.conv1": {"width": 0.5},  # a width group whose layers sit in a dropped block too
        "layer4.0.conv1": {"bits": 8},
    }
    artifact = builder.build(Candidate(layers=layers))
    graph = onnx.load(str(artifact.path)).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == len([n for n in full.graph.node if n.op_type == "Conv"]) - 4
    assert not any("/layer2.1/" in n or "/layer3.1/" in n for n in convs)
    assert "/layer4/layer4.0/conv1/Conv" in convs  # the other layers keep their node names
    assert any(n.op_type == "DequantizeLinear" for n in graph.node)
    out = ort.InferenceSession(str(artifact.path)).run(None, {"input": x.numpy()})[0]
    assert out.shape == (1, 10)
    # the floor drops every block
    floor = builder.build(space.candidate(space.baselines()["floor"]))
    assert not any("/layer1.0/" in n.name for n in onnx.load(str(floor.path)).graph.node)


def test_a_model_without_residual_blocks_says_so_and_the_probe_says_what_is_missing() -> None:
    space = build_space(_task(ConcatNet(), torch.randn(1, 1, 32, 32)), load_preset(None), load_profile("cpu"))
    assert not any("depth" in layer.knobs for layer in space.layers)
    assert any(n.startswith("depth not searched: no residual block") for n in space.notes)
    reference = Reference(accuracy=90.0, latency_ms=1.0, sha256="", size_bytes=0)
    message = infeasible_message([("w0.25", 0.8)], reference, 0.5, space)
    assert message is not None and "no residual block to drop" in message


@pytest.mark.parametrize("preset", ["conservative", "keep"])
def test_presets_leave_depth_out(tmp_path: Path, preset: str) -> None:
    if preset == "keep":
        path = tmp_path / "keep.yaml"
        path.write_text("layers:\n  keep: ['layer1*']\n")
        preset = str(path)
    space = build_space(
        _task(resnet18(10, width=16), torch.randn(1, 3, 32, 32)), load_preset(preset), load_profile("cpu")
    )
    blocks = [layer.name for layer in space.layers if "depth" in layer.knobs]
    assert blocks == ([] if preset == "conservative" else ["layer2.1", "layer3.1", "layer4.1"])
