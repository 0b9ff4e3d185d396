"""The online latency predictor: what it reads off a built artifact, learning, error tracking, skipping."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_tasks import conv_task

from autotune.build._builder import ArtifactBuilder
from autotune.build._recover import Recovery
from autotune.space._profiles import load_profile
from autotune.space._space import build_space, load_preset
from autotune.study._onnx_stats import optimized_graph
from autotune.study._predictor import LatencyPredictor, kernel_work, layer_stats
from autotune.task._onnx_export import export_onnx


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    """The tiny task's space, its reference and 50 built candidates (recipe at its default),
    each with its ratio on a synthetic device."""
    task = conv_task()
    space = build_space(task, load_preset(None), load_profile("cpu"))
    builder = ArtifactBuilder(task, space, tmp_path_factory.mktemp("a"), recovery=Recovery(mode="none"))
    x = {"input": task.example_inputs[0].numpy()}
    reference = builder.build(space.candidate({})).path
    ref_macs = sum(s.macs for s in layer_stats(reference, x).values())
    rng = np.random.default_rng(0)
    params = {k: v for k, v in space.parameters().items() if not k.startswith("recipe:")}
    configs = [{k: v[rng.integers(len(v))] for k, v in params.items()} for _ in range(49)]
    configs.insert(0, {k: 8 for k in params if k.endswith(":bits")})  # uniform int8
    built = []
    for config, noise in zip(configs, rng.uniform(-0.03, 0.03, len(configs)), strict=True):
        c = space.candidate(config)
        path = builder.build(c).path
        built.append((c, path, true_ratio(path, x, ref_macs, noise)))
    return space, x, reference, built


def true_ratio(artifact: Path, x, ref_macs: float, noise: float) -> float:
    """A synthetic device, charging for what onnxruntime runs: multiply-adds (real, pruned
    shapes), 2.5x cheaper on a fused int8 kernel; 1% of the reference per node; a fixed 10%;
    and up to +-3% of measurement noise. (Which layers run in int8 is read off onnxruntime's
    optimised graph, not the candidate: onnxruntime also quantizes a float layer whose
    neighbours are int8 and fuses it into a QLinearConv.)"""
    graph = optimized_graph(artifact)
    int8 = {
        re.sub(r"(_token_\d+)+$", "", n.name) for n in graph.node if n.op_type in ("QLinearConv", "QGemm")
    }
    left = sum(s.macs / (2.5 if n in int8 else 1.0) for n, s in layer_stats(artifact, x).items())
    return (0.10 + 0.85 * left / ref_macs + 0.01 * len(graph.node)) * (1 + noise)


def test_layer_stats_count_macs_params_and_channels(tmp_path: Path) -> None:
    task = conv_task()
    path = tmp_path / "ref.onnx"
    export_onnx(task.model.eval(), task.example_inputs, path)
    stats = layer_stats(path, {"input": task.example_inputs[0].numpy()})
    first = next(m for m in task.model.modules() if isinstance(m, torch.nn.Conv2d))
    s = next(iter(stats.values()))
    assert s.op == "Conv" and s.channels == first.out_channels
    assert s.params == first.weight.numel() + (first.bias.numel() if first.bias is not None else 0)
    out = first(task.example_inputs[0][:1])  # MACs: output positions x weight size, per batch row
    batch = task.example_inputs[0].shape[0]
    assert s.macs == batch * out.shape[2] * out.shape[3] * first.weight.numel()
    assert sum(st.depthwise for st in stats.values()) == 1  # TinyResNet's one depthwise conv


def test_kernel_work_says_which_kernel_runs_each_layer(setup) -> None:
    """Multiply-adds are conserved and put on the kernel onnxruntime runs: none in int8 for the
    FP32 reference; most in fused int8 kernels (QDQ -> QLinearConv) for uniform int8, whose
    weights are read through their DequantizeLinear; fewer, all accounted for, when pruned."""
    _, x, reference, built = setup
    total = sum(s.macs for s in layer_stats(reference, x).values())
    fp32 = kernel_work(reference, x)
    assert sum(fp32.macs.values()) == pytest.approx(total)
    assert fp32.macs["int8"] == fp32.macs["int8_dw"] == 0 and fp32.elements["qdq"] == 0
    int8 = kernel_work(built[0][1], x)  # uniform int8, widths 1.0
    assert sum(int8.macs.values()) == pytest.approx(total)
    assert int8.macs["int8"] + int8.macs["int8_dw"] > 0.5 * total
    assert int8.elements["qdq"] >= x["input"].size and int8.activations["int8"] > 0  # the input, at least
    assert int8.elements["layout"] > 0 and fp32.elements["layout"] > 0  # NHWC / NCHWc changes
    pruned = [a for c, a, _ in built if any(c.value(n, "width") != 1.0 for n in c.layers)]
    assert pruned
    for a in pruned[:8]:
        work = kernel_work(a, x)
        left = sum(s.macs for s in layer_stats(a, x).values())
        assert sum(work.macs.values()) == pytest.approx(left) and left < total


def test_predictions_within_10pct_after_30_candidates_and_errors_tracked(setup) -> None:
    space, x, reference, built = setup
    predictor = LatencyPredictor(reference, x, space, min_train=30)
    for c, a, truth in built[:30]:
        assert predictor.observe(a, c.runtime, truth) is None  # not trained yet
    errors = []
    for c, a, truth in built[30:]:
        predicted = predictor.observe(a, c.runtime, truth)
        errors.append(abs(predicted - truth) / truth)
    assert np.mean(np.asarray(errors) <= 0.10) >= 0.9
    st = predictor.stats
    assert st["checked"] == 20 and st["trained_on"] == 50
    assert st["mape"] == pytest.approx(np.mean(errors), abs=1e-4)


def test_kernel_features_beat_counting_layers(setup) -> None:
    """The synthetic device's int8 speed-up shows only in which kernel runs the MACs: with the
    MACs and activations lumped together (the kernel split hidden), it predicts far worse."""
    space, x, reference, built = setup
    errors = {}
    for split in (True, False):
        predictor = LatencyPredictor(reference, x, space, min_train=30)
        if not split:
            inner = predictor._work_features
            predictor._work_features = (
                lambda w, inner=inner: np.concatenate(  # type: ignore[method-assign]
                    [[inner(w)[:5].sum()], inner(w)[7:]]
                )
            )
        for c, a, truth in built[:30]:
            predictor.observe(a, c.runtime, truth)
        errors[split] = [abs(predictor.predict(a, c.runtime) - t) / t for c, a, t in built[30:]]
    assert np.mean(errors[True]) < 0.5 * np.mean(errors[False])


def test_only_candidates_clearly_beyond_the_budget_are_skipped(setup) -> None:
    space, x, reference, built = setup
    predictor = LatencyPredictor(reference, x, space, min_train=10)
    for c, a, truth in built[:10]:
        predictor.observe(a, c.runtime, truth)
    c, a, _ = built[10]
    assert predictor.beyond(a, c.runtime, 0.01)[0] is False  # error not known yet: never skip
    for c, a, truth in built[10:20]:
        predictor.observe(a, c.runtime, truth)
    budget = 0.6
    for c, a, truth in built[20:]:
        skip, predicted = predictor.beyond(a, c.runtime, budget)
        assert skip == (predicted > budget * (1 + predictor.margin))
        if skip:  # a skipped candidate is really over budget
            assert truth > budget
    assert predictor.margin >= 0.15 and predictor.stats["skipped"] >= 0


# -- in the search ------------------------------------------------------------------------------
def test_search_skips_candidates_predicted_beyond_the_budget(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget far below what the tiny model reaches: once trained (on 6 here), sampled candidates
    predicted beyond it by the safe margin are pruned with the predicted figure, never measured;
    baselines always are; --no-predictor measures everything."""
    import autotune
    from autotune.records import Protocol
    from autotune.study import PREDICTED_KEY, PREDICTION_KEY
    from autotune.study import _predictor as predictor

    monkeypatch.setattr(predictor, "MIN_TRAIN", 6)
    kw = {"out_dir": tmp_path, "protocol": Protocol.quick(), "progress": False, "report": False}
    # 5%: every candidate of the tiny model is several times over it, so a skip cannot hinge on how
    # noisy the host made the predictor's recent errors (the margin widens with them)
    result = autotune.search(conv_task(), budget="5%", trials=24, keep_going=True, **kw)
    stats = result.meta.search["predictor"]
    assert stats["enabled"] and stats["trained_on"] >= 6 and stats["checked"] >= 5
    assert result.skipped and stats["skipped"] == len(result.skipped)
    measured = {t.number for t in result.trials}
    for s in result.skipped:  # predicted, not measured: not a trial result, not in the Pareto set
        assert s.number not in measured and s.candidate is not None
        assert s.predicted["ratio"] > s.predicted["budget_ratio"] * (1 + predictor.MIN_MARGIN)
        assert s.predicted["latency_ms"] > 0
    trial = {t.number: t for t in result.study.get_trials(deepcopy=False)}
    assert all(
        trial[s.number].state.name == "PRUNED" and PREDICTED_KEY in trial[s.number].user_attrs
        for s in result.skipped
    )
    assert {t.baseline for t in result.trials if t.baseline} >= {"fp32", "int8"}  # never skipped
    assert all(t.number in measured for t in result.pareto)
    # the error is tracked on candidates measured after training: each carries its prediction
    assert sum(PREDICTION_KEY in trial[n].user_attrs for n in measured) == stats["checked"]
    assert len(result.trials) + len(result.skipped) + len(result.failures) == 24
    text = result.summary()
    assert f"latency predictor: {len(result.skipped)} candidate(s) skipped" in text and "MAPE" in text

    off = autotune.search(
        conv_task(), budget="30%", trials=14, keep_going=True, predictor=False, study_name="off", **kw
    )
    assert not off.skipped and off.meta.search["predictor"] == {"enabled": False}
    assert "latency predictor: off (--no-predictor)" in off.summary()
