"""A knob is a plugin: one class plus one ``register`` line, and every stage sees it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tiny_tasks import conv_task
from torch import nn

import autotune
from autotune.devices import Protocol
from autotune.knobs import LAYER_KNOBS, BuildContext, Discovery, KnobValue, TorchKnob, register, unregister


class ZeroBias(TorchKnob):
    """A toy knob: zero a layer's bias. Nothing in autotune knows about it."""

    name = "zero_bias"
    default = "keep"
    help = "keep or zero"
    values = ("keep", "zero")

    def parse(self, value: Any) -> KnobValue | None:
        return value if value in ("keep", "zero") else None

    def label(self, value: KnobValue) -> str:
        return "nobias" if value == "zero" else "bias"

    def heat(self, value: KnobValue) -> float:
        return 1.0 if value == "zero" else 0.0

    def discover(
        self, found: Discovery, allowed: list[KnobValue]
    ) -> tuple[dict[str, list[KnobValue]], list[str]]:
        with_bias = [n for n in found.layers if getattr(found.module(n), "bias", None) is not None]
        return {n: list(allowed) for n in with_bias}, [f"zero_bias searched in {len(with_bias)} layers"]

    def apply(self, model: nn.Module, choices: dict[str, KnobValue], ctx: BuildContext) -> None:
        for name, value in choices.items():
            if value == "zero":
                bias = model.get_submodule(name).bias
                assert isinstance(bias, nn.Parameter)
                nn.init.zeros_(bias)


@pytest.fixture
def zero_bias() -> Iterator[None]:
    register(ZeroBias())  # the one registry line: delete it and the test below fails
    yield
    unregister("zero_bias")


def test_a_registered_knob_is_searched_built_and_reported(tmp_path: Path, zero_bias: None) -> None:
    # only the toy knob varies, so every sampled trial is about it
    preset = tmp_path / "toy.yaml"
    preset.write_text("knobs:\n  width: [1.0]\n  bits: [32]\n  sparsity: [0.0]\n")
    report = tmp_path / "report.html"
    result = autotune.search(
        conv_task(),
        budget="300%",
        device="cpu",
        trials=6,
        seed=0,
        space=str(preset),
        out_dir=tmp_path / "runs",
        protocol=Protocol.quick(),
        progress=False,
        report=report,
        sensitivity=False,
    )
    space = result.meta.space
    searched = {layer["name"]: layer["knobs"] for layer in space["layers"] if "zero_bias" in layer["knobs"]}
    assert searched, space
    assert any("zero_bias searched in" in note for note in space["notes"])

    zeroed = [
        t for t in result.trials if any(c.get("zero_bias") == "zero" for c in t.candidate.layers.values())
    ]
    assert zeroed, "no sampled trial zeroed a bias"
    trial = zeroed[0]
    assert "nobiasx" in trial.candidate.describe()
    # the built artifact really has the zeroed biases, and only those
    graph = onnx.load(str(trial.artifact_path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes = {layer["name"]: layer["onnx_node"] for layer in space["layers"]}
    by_name = {n.name: n for n in graph.node}
    # the exporter stores equal tensors once: a second zero bias is an Identity of the first
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    for layer in searched:
        name = by_name[nodes[layer]].input[2]
        while name in alias:
            name = alias[name]
        bias = weights[name]
        want_zero = trial.candidate.layers.get(layer, {}).get("zero_bias") == "zero"
        assert bool(np.all(bias == 0)) == want_zero, layer
    # the report's per-layer heatmap has a panel for it
    assert "zero_bias" in report.read_text()


def test_the_builtin_knobs_are_registered_in_application_order() -> None:
    # structural pruning (width, heads) before sparsity masks, the ONNX-side bits last
    assert list(LAYER_KNOBS)[:4] == ["width", "heads", "sparsity", "bits"]
    assert [type(k).__name__ for k in LAYER_KNOBS.values()][:4] == ["Width", "Heads", "Sparsity", "Bits"]
