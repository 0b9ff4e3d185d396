"""Calibration within the memory budget: batches fed in slices, one feed collected at a time."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnxruntime.quantization.calibrate import HistogramCalibrater, MinMaxCalibrater
from tiny_tasks import TinyResNet

from autotune.inputs import InputSpec
from autotune.knobs import _quantize
from autotune.knobs._quantize import _Batches, calibration_rows, quantize_model
from autotune.task import export_onnx, weighted_nodes


def test_batches_are_sliced_along_a_dynamic_batch_axis_only() -> None:
    x = np.zeros((16, 3, 8, 8), np.float32)
    dynamic = [InputSpec("input", np.dtype(np.float32), (None, 3, 8, 8))]
    reader = _Batches(dynamic, [(x,), (x[:3],)], rows=5)
    assert len(reader) == 4 + 1
    sizes = [f["input"].shape[0] for f in iter(reader.get_next, None)]
    assert sizes == [5, 5, 5, 1, 3]
    reader.set_range(1, 3)  # what quantize_static's strided collection calls
    assert [f["input"].shape[0] for f in iter(reader.get_next, None)] == [5, 5]
    static = [InputSpec("input", np.dtype(np.float32), (16, 3, 8, 8))]
    assert len(_Batches(static, [(x,)], rows=5)) == 1
    assert len(_Batches(dynamic, [(x,)], rows=None)) == 1  # no budget: as given


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[np.ndarray]], dict[str, int]]:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("calib") / "fp32.onnx"
    export_onnx(TinyResNet().eval(), (torch.randn(1, 3, 16, 16),), path)
    batches = [
        (np.random.default_rng(i).standard_normal((8, 3, 16, 16)).astype(np.float32),) for i in range(2)
    ]
    bits = {n.name: 8 for n in weighted_nodes(onnx.load(str(path)))}
    return path, batches, bits


def _feeds_per_collect(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[int]:
    """How many feeds each of the calibrator's ``collect_data`` calls read."""
    seen: list[int] = []
    inner = cls.collect_data

    def counting(self, reader):  # type: ignore[no-untyped-def]
        n = [0]
        get_next = reader.get_next

        def counted():  # type: ignore[no-untyped-def]
            feed = get_next()
            n[0] += feed is not None
            return feed

        reader.get_next = counted
        try:
            return inner(self, reader)
        finally:
            reader.get_next = get_next
            seen.append(n[0])

    monkeypatch.setattr(cls, "collect_data", counting)
    return seen


def test_a_small_budget_slices_calibration_and_minmax_ranges_do_not_change(
    model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, batches, bits = model
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path / "whole"))
    quantize_model(path, tmp_path / "whole.onnx", bits, batches)
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path / "sliced"))  # no cached ranges
    monkeypatch.setattr(_quantize, "headroom", lambda: 1)  # room for one sample per feed
    seen = _feeds_per_collect(monkeypatch, MinMaxCalibrater)
    quantize_model(path, tmp_path / "sliced.onnx", bits, batches)
    assert seen == [1] * 16  # 2 batches of 8, one sample per feed, one feed per collection

    def scales(p: Path) -> dict[str, np.ndarray]:
        g = onnx.load(str(p)).graph
        return {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer if "scale" in i.name}

    whole, sliced = scales(tmp_path / "whole.onnx"), scales(tmp_path / "sliced.onnx")
    assert whole.keys() == sliced.keys() and whole
    for name in whole:
        np.testing.assert_allclose(whole[name], sliced[name], rtol=1e-6, err_msg=name)


def test_histogram_calibrators_collect_one_feed_at_a_time(
    model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entropy and percentile calibrators keep every output of every feed they read until they
    histogram them: reading one feed per collection bounds that to one feed."""
    from autotune.knobs import Recipe

    path, batches, bits = model
    monkeypatch.setenv("AUTOTUNE_CACHE", str(tmp_path))
    seen = _feeds_per_collect(monkeypatch, HistogramCalibrater)
    quantize_model(path, tmp_path / "entropy.onnx", bits, batches, Recipe(calibration="entropy"))
    assert seen == [1, 1]  # no budget here: the batches as given, one per collection
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(tmp_path / "entropy.onnx")).graph.node)


def test_feed_rows_follow_the_memory_left(model, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, _ = model
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    monkeypatch.setattr(_quantize, "headroom", lambda: None)
    assert calibration_rows(graph) is None
    monkeypatch.setattr(_quantize, "headroom", lambda: 1 << 30)
    roomy = calibration_rows(graph)
    monkeypatch.setattr(_quantize, "headroom", lambda: 1 << 20)
    tight = calibration_rows(graph)
    assert roomy is not None and tight is not None and roomy > tight >= 1
