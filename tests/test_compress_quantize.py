"""The torch knobs (width, sparsity) and the ONNX knob (bits) act as specified."""

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from autotune.knobs._quantize import quantize_model
from autotune.knobs._sparsity import apply_sparsity, make_permanent, two_four_mask
from autotune.knobs._width import prune_width
from autotune.task._evaluate import OrtRunner
from autotune.task._onnx_export import export_onnx, layer_nodes
from autotune.task.zoo import ConcatNet, TinyTransformer, resnet18


def test_width_pruning_rounds_to_eight_and_keeps_the_interface() -> None:
    model = resnet18(10).eval()
    x = torch.randn(1, 3, 64, 64)
    prune_width(model, (x,), {"layer1.0.conv1": 0.5, "conv1": 0.75, "layer3.0.conv1": 0.3}, ignored=["fc"])
    assert model.layer1[0].conv1.out_channels == 32
    assert model.conv1.out_channels == 48  # coupled with layer1's residual path
    assert model.layer1[1].conv2.out_channels == 48
    assert model.layer3[0].conv1.out_channels % 8 == 0 and model.layer3[0].conv1.out_channels < 256
    assert model(x).shape == (1, 10)


def test_width_pruning_handles_concatenation() -> None:
    model = ConcatNet().eval()
    x = torch.randn(2, 1, 32, 32)
    roots = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][:2]
    prune_width(model, (x[:1],), dict.fromkeys(roots, 0.5), ignored=["fc"])
    assert model(x).shape[0] == 2


def test_two_four_mask_keeps_the_two_largest_of_every_four_input_channels() -> None:
    w = torch.randn(16, 8, 3, 3)
    mask = two_four_mask(w)
    groups = mask.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.all(groups.sum(1) == 2)
    kept = (w.abs().permute(0, 2, 3, 1).reshape(-1, 4) * groups).sum(1)
    top2 = w.abs().permute(0, 2, 3, 1).reshape(-1, 4).topk(2, dim=1).values.sum(1)
    assert torch.allclose(kept, top2)


def test_sparsity_masks_then_becomes_permanent() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    masked = apply_sparsity(model, {"0": 0.75, "2": "2:4"})
    make_permanent(masked)
    assert not hasattr(model[0], "weight_mask")
    assert (model[0].weight == 0).float().mean().item() == pytest.approx(0.75, abs=0.01)
    assert (model[2].weight == 0).float().mean().item() == pytest.approx(0.5)


def _export(model: torch.nn.Module, x: torch.Tensor, tmp: Path) -> tuple[Path, onnx.ModelProto]:
    path = tmp / "fp32.onnx"
    export_onnx(model.eval(), (x,), path)
    return path, onnx.load(str(path))


def test_int8_quantizes_exactly_the_chosen_layers(tmp_path: Path) -> None:
    model = resnet18(10).eval()
    x = torch.randn(4, 3, 64, 64)
    path, graph = _export(model, x[:1], tmp_path)
    nodes = layer_nodes(graph, {n for n, _ in model.named_modules()})
    chosen = {nodes["layer1.0.conv1"].name: 8, nodes["fc"].name: 8}
    out = tmp_path / "q.onnx"
    quantize_model(path, out, chosen, [(x.numpy(),)])
    q = onnx.load(str(out))
    weighted_by_dq = set()
    producers = {o: n for n in q.graph.node for o in n.output}
    for node in q.graph.node:
        if node.op_type in ("Conv", "Gemm") and producers.get(node.input[1], None) is not None:
            if producers[node.input[1]].op_type == "DequantizeLinear":
                weighted_by_dq.add(node.name)
    assert weighted_by_dq == set(chosen)
    ref, got = OrtRunner(path)(x), OrtRunner(out)(x)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.98


def test_int4_uses_matmulnbits_on_matmul_layers(tmp_path: Path) -> None:
    model = TinyTransformer().eval()
    x = torch.randn(4, 16, 64)
    path, graph = _export(model, x[:1], tmp_path)
    nodes = layer_nodes(graph, {n for n, _ in model.named_modules()})
    matmuls = [n.name for n in nodes.values() if n.op_type == "MatMul"]
    out = tmp_path / "q4.onnx"
    quantize_model(path, out, dict.fromkeys(matmuls[:3], 4), [(x.numpy(),)])
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("MatMulNBits") == 3
    assert out.stat().st_size < path.stat().st_size
    ref, got = OrtRunner(path)(x), OrtRunner(out)(x)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.95


def test_pruned_copy_leaves_the_teacher_untouched() -> None:
    model = resnet18(10).eval()
    before = copy.deepcopy(model.state_dict())
    student = copy.deepcopy(model)
    prune_width(student, (torch.randn(1, 3, 64, 64),), {"layer1.0.conv1": 0.5}, ignored=["fc"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("chosen", ["one", "all", "mixed-with-int8"])
def test_fp16_layers_are_valid_and_float_layers_stay_float(tmp_path: Path, chosen: str) -> None:
    """Found on an H100: the converter's graph was unsorted (no 16-bit layer was ever searched)."""
    model = resnet18(10).eval()
    x = torch.randn(2, 3, 64, 64)
    path, graph = _export(model, x[:1], tmp_path)
    nodes = layer_nodes(graph, {n for n, _ in model.named_modules()})
    names = [n.name for n in nodes.values()]
    bits = {
        "one": {nodes["layer2.0.conv1"].name: 16},
        "all": dict.fromkeys(names, 16),
        "mixed-with-int8": {**dict.fromkeys(names[:4], 16), **dict.fromkeys(names[4:8], 8)},
    }[chosen]
    out = tmp_path / "h.onnx"
    quantize_model(path, out, bits, [(x.numpy(),)])
    q = onnx.load(str(out))
    onnx.checker.check_model(q, full_check=True)
    casts = {n.output[0]: n for n in q.graph.node if n.op_type == "Cast"}
    for node in q.graph.node:  # no fp32 -> fp16 -> fp32 round trip rounds a float layer's tensor
        for t in node.input:
            if t in casts and casts[t].input[0] in casts and node.op_type != "Cast":
                inner, outer = casts[casts[t].input[0]], casts[t]
                assert (inner.attribute[0].i, outer.attribute[0].i) != (onnx.TensorProto.FLOAT16, 1)
    initializers = {i.name: i.data_type for i in q.graph.initializer}
    halves = {
        n.name
        for n in q.graph.node
        if n.op_type in ("Conv", "Gemm") and initializers.get(n.input[1]) == onnx.TensorProto.FLOAT16
    }
    assert halves == {n for n, b in bits.items() if b == 16}
    if chosen == "all":  # one Cast in, one out: the ReLUs and Adds between layers run in fp16
        constant = set(initializers)  # weights, and what is computed from weights alone (folded)
        for node in q.graph.node:
            if all(t in constant for t in node.input):
                constant.update(node.output)
        activation_casts = [n for n in casts.values() if n.input[0] not in constant]
        assert len(activation_casts) == 2
    ref, got = OrtRunner(path)(x), OrtRunner(out)(x)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99
