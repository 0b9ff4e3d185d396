"""The demo task and the model zoo: trained accuracy through onnxruntime, caching, exports."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from autotune.task import demo
from autotune.task.zoo import MLP, ConcatNet, DigitsNet, TinyTransformer, resnet18


def _export(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> Path:
    torch.onnx.export(
        model,
        inputs,
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=17,
    )
    return path


def _ort_runner(path: Path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(*arrays: np.ndarray) -> np.ndarray:
        return session.run(None, {"input": np.asarray(arrays[0], dtype=np.float32)})[0]

    return run


def _torch_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        return demo.accuracy(lambda a: model(torch.from_numpy(a)).numpy(), x, y)


@pytest.fixture(scope="module")
def splits() -> demo.DigitsSplits:
    return demo.load_digits_splits()


@pytest.fixture(scope="module")
def teacher() -> DigitsNet:
    return demo.train_demo_model()


def test_splits_are_stratified_float32(splits: demo.DigitsSplits) -> None:
    assert splits.x_train.shape[1:] == (1, 32, 32) and splits.x_train.dtype == np.float32
    assert splits.x_test.dtype == np.float32 and splits.y_test.dtype == np.int64
    assert 0.18 < len(splits.x_test) / (len(splits.x_test) + len(splits.x_train)) < 0.22
    counts = np.bincount(splits.y_test, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified: ~36 per class
    assert abs(float(splits.x_train.mean())) < 0.2 and 0.8 < float(splits.x_train.std()) < 1.2


def test_demo_model_accuracy_through_onnxruntime(
    teacher: DigitsNet, splits: demo.DigitsSplits, tmp_path: Path
) -> None:
    path = _export(teacher, (torch.from_numpy(splits.x_test[:1]),), tmp_path / "demo.onnx")
    runner = _ort_runner(path)
    acc = demo.accuracy(runner, splits.x_test, splits.y_test, batch_size=100)  # ragged last batch
    assert acc >= 95.0
    assert acc == pytest.approx(_torch_accuracy(teacher, splits.x_test, splits.y_test), abs=0.6)


def test_checkpoint_is_reused(teacher: DigitsNet, tmp_path: Path, monkeypatch) -> None:
    path = demo.cache_path()
    assert path.is_file() and demo.DEMO_VERSION in path.name
    mtime, trained, loaded = path.stat().st_mtime_ns, demo.CACHE_STATS["trained"], demo.CACHE_STATS["loaded"]
    again = demo.train_demo_model()
    assert path.stat().st_mtime_ns == mtime
    assert demo.CACHE_STATS["trained"] == trained and demo.CACHE_STATS["loaded"] == loaded + 1
    for a, b in zip(teacher.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not again.training

    # $AUTOTUNE_CACHE names the cache directory; no temporary files are left behind.
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path))
    moved = demo.cache_path()
    assert moved.parent == tmp_path
    shutil.copy(path, moved)
    demo.train_demo_model()
    assert demo.CACHE_STATS["trained"] == trained
    assert sorted(os.listdir(tmp_path)) == [moved.name]


def test_demo_task(teacher: DigitsNet) -> None:
    task = demo.demo_task()
    assert task.name == "demo-digits" and task.metric == "accuracy"
    assert len(task.example_inputs) == 1 and tuple(task.example_inputs[0].shape) == (1, 1, 32, 32)
    assert len(task.calibration) == 8
    assert all(b[0].shape == (32, 1, 32, 32) and b[0].dtype == np.float32 for b in task.calibration)
    model = task.model.eval()
    with torch.no_grad():
        acc = task.evaluate(lambda x: model(torch.as_tensor(x)).numpy())
    assert acc >= 95.0
    assert task.finetune is not None


ZOO = {
    "DigitsNet": (lambda: DigitsNet(), (1, 1, 32, 32)),
    "DigitsNet16": (lambda: DigitsNet(width=16), (1, 1, 32, 32)),
    "resnet18": (lambda: resnet18(), (1, 3, 224, 224)),
    "ConcatNet": (lambda: ConcatNet(), (1, 1, 32, 32)),
    "MLP": (lambda: MLP(), (1, 64)),
    "TinyTransformer": (lambda: TinyTransformer(), (1, 16, 64)),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_forward_and_onnx_export(name: str, tmp_path: Path) -> None:
    factory, shape = ZOO[name]
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        out = model(x)
    num_classes = 1000 if name == "resnet18" else 10
    assert out.shape == (1, num_classes) and torch.isfinite(out).all()
    path = _export(model, (x,), tmp_path / f"{name}.onnx")
    onnx.checker.check_model(onnx.load(str(path)))
    batch = torch.randn(2, *shape[1:])  # dynamic batch axis
    with torch.no_grad():
        expected = model(batch).numpy()
    np.testing.assert_allclose(_ort_runner(path)(batch.numpy()), expected, rtol=1e-3, atol=1e-4)


def test_resnet18_matches_torchvision_layout() -> None:
    model = resnet18()
    names = dict(model.named_modules())
    for key in ("conv1", "bn1", "layer1.0.conv1", "layer2.0.downsample.0", "layer4.1.bn2", "fc"):
        assert key in names
    assert "layer1.0.downsample" not in names
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's count


def test_digitsnet_structure() -> None:
    model = DigitsNet()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert any(m.groups == m.in_channels == m.out_channels > 1 for m in convs)  # depthwise
    assert all(m.out_channels % 8 == 0 for m in convs)
    assert isinstance(model.fc, nn.Linear)
    with pytest.raises(ValueError):
        DigitsNet(width=12)


def test_tiny_transformer_linears_export_as_matmul(tmp_path: Path) -> None:
    depth = 2
    model = TinyTransformer(depth=depth).eval()
    path = _export(model, (torch.randn(1, 16, 64),), tmp_path / "tt.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    # 6 Linear per block (q, k, v, out, fc1, fc2) + 2 attention products; the 2-D head is Gemm.
    assert ops.count("MatMul") == 8 * depth
    assert ops.count("Gemm") == 1


def test_distill_trains_a_fresh_narrow_student(teacher: DigitsNet, splits: demo.DigitsSplits) -> None:
    torch.manual_seed(1)
    student = DigitsNet(width=16)
    before = _torch_accuracy(student, splits.x_test, splits.y_test)
    assert before < 40.0
    demo.distill(
        student,
        teacher,
        splits.x_train,
        steps=100,
        lr=3e-3,
        temperature=4.0,
        y_train=splits.y_train,
        batch_size=32,
    )
    assert not student.training
    assert _torch_accuracy(student, splits.x_test, splits.y_test) > 90.0


def test_distill_is_deterministic_and_keeps_prune_masks(
    teacher: DigitsNet, splits: demo.DigitsSplits
) -> None:
    logits = demo.teacher_logits(teacher, splits.x_train)
    results = []
    for _ in range(2):
        student = copy.deepcopy(teacher)
        convs = [m for m in student.modules() if isinstance(m, nn.Conv2d)]
        for conv in convs:
            prune.l1_unstructured(conv, "weight", amount=0.6)
        demo.distill(student, teacher, splits.x_train, y_train=splits.y_train, logits=logits)
        for conv in convs:  # masked weights stay exactly zero after training through forward()
            assert not conv.weight[conv.weight_mask == 0].any()
        assert _torch_accuracy(student, splits.x_test, splits.y_test) >= 90.0
        results.append(torch.cat([p.detach().flatten() for p in student.parameters()]))
    assert torch.equal(results[0], results[1])


def test_demo_finetune_recovers_half_width_student(teacher: DigitsNet, splits: demo.DigitsSplits) -> None:
    """Halve every channel (keeping the largest-norm filters) and let the demo's finetune fix it."""
    student = _half_width_copy(teacher)
    assert _torch_accuracy(student, splits.x_test, splits.y_test) < 70.0
    task = demo.demo_task()
    task.finetune(student, teacher)
    assert _torch_accuracy(student, splits.x_test, splits.y_test) >= 90.0


def _half_width_copy(model: DigitsNet) -> nn.Module:
    tp = pytest.importorskip("torch_pruning")
    student = copy.deepcopy(model)
    pruner = tp.pruner.MagnitudePruner(
        student,
        torch.randn(1, 1, 32, 32),
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=[student.fc],
    )
    pruner.step()
    assert sum(p.numel() for p in student.parameters()) == sum(
        p.numel() for p in DigitsNet(width=16).parameters()
    )
    return student.eval()
