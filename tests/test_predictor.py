"""The online latency predictor: layer statistics from ONNX, learning, error tracking, skipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_tasks import conv_task

from autotune.onnx_export import export_onnx
from autotune.predictor import LatencyPredictor, layer_stats
from autotune.profiles import load_profile
from autotune.space import build_space, load_preset


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    task = conv_task()
    space = build_space(task, load_preset(None), load_profile("cpu"))
    path = tmp_path_factory.mktemp("p") / "ref.onnx"
    export_onnx(task.model.eval(), task.example_inputs, path)
    x = {"input": task.example_inputs[0].numpy()}
    return space, layer_stats(path, x), task


def test_layer_stats_count_macs_params_and_channels(setup) -> None:
    space, stats, task = setup
    first = next(m for m in task.model.modules() if isinstance(m, torch.nn.Conv2d))
    s = next(iter(stats.values()))
    assert s.op == "Conv" and s.channels == first.out_channels
    assert s.params == first.weight.numel() + (first.bias.numel() if first.bias is not None else 0)
    out = first(task.example_inputs[0][:1])  # MACs: output positions x weight size, per batch row
    batch = task.example_inputs[0].shape[0]
    assert s.macs == batch * out.shape[2] * out.shape[3] * first.weight.numel()
    assert {layer.onnx_node for layer in space.layers} <= set(stats)


def true_ratio(space, stats, candidate) -> float:
    """A synthetic device: latency adds up per layer; int8 layers run 2.5x faster."""
    total, left, prev = sum(s.macs for s in stats.values()), 0.0, 1.0
    for layer in space.layers:
        w = float(candidate.value(layer.name, "width"))
        speed = 2.5 if candidate.value(layer.name, "bits") == 8 else 1.0
        left += stats[layer.onnx_node].macs * w * prev / speed / total
        prev = w
    return 0.15 + 0.85 * left


def random_candidates(space, n: int, seed: int):
    rng = np.random.default_rng(seed)
    params = space.parameters()
    for _ in range(n):
        yield space.candidate({k: v[rng.integers(len(v))] for k, v in params.items()})


def test_predictions_within_10pct_after_30_candidates_and_errors_tracked(setup) -> None:
    space, stats, _ = setup
    predictor = LatencyPredictor(space, stats, min_train=30)
    cands = list(random_candidates(space, 50, seed=0))
    for c in cands[:30]:
        assert predictor.observe(c, true_ratio(space, stats, c)) is None  # not trained yet
    errors = []
    for c in cands[30:]:
        truth = true_ratio(space, stats, c)
        predicted = predictor.observe(c, truth)
        errors.append(abs(predicted - truth) / truth)
    assert np.mean(np.asarray(errors) <= 0.10) >= 0.9
    st = predictor.stats
    assert (
        st["checked"] == 20
        and st["trained_on"] == 50
        and st["mape"] == pytest.approx(np.mean(errors), abs=1e-4)
    )


def test_recipe_knobs_that_change_int8_kernels_are_learnt(setup) -> None:
    """s8 activations make int8 kernels slower (no VNNI: u8 x s8 is the fast path); the
    predictor learns it from the recipe flags scaled by the int8 work, not from widths and bits."""
    space, stats, _ = setup
    assert "recipe:activation" in space.parameters()  # the cpu profile searches the recipe

    def truth(c) -> float:
        s8 = c.recipe.activation == "s8"
        total, left, prev = sum(s.macs for s in stats.values()), 0.0, 1.0
        for layer in space.layers:
            w = float(c.value(layer.name, "width"))
            speed = (0.8 if s8 else 2.5) if c.value(layer.name, "bits") == 8 else 1.0
            left += stats[layer.onnx_node].macs * w * prev / speed / total
            prev = w
        return 0.15 + 0.85 * left

    cands = list(random_candidates(space, 60, seed=3))
    errors = {}
    for with_recipe in (True, False):
        predictor = LatencyPredictor(space, stats, min_train=40)
        if not with_recipe:  # the same predictor blind to the recipe
            predictor._study_features = lambda c: np.zeros(0)  # type: ignore[method-assign]
        for c in cands[:40]:
            predictor.observe(c, truth(c))
        errors[with_recipe] = [abs(predictor.predict(c) - truth(c)) / truth(c) for c in cands[40:]]
    assert any(c.recipe.activation == "s8" for c in cands[40:])
    assert np.mean(np.asarray(errors[True]) <= 0.10) >= 0.9
    assert np.mean(errors[True]) < 0.5 * np.mean(errors[False])


def test_only_candidates_clearly_beyond_the_budget_are_skipped(setup) -> None:
    space, stats, _ = setup
    predictor = LatencyPredictor(space, stats, min_train=10)
    cands = list(random_candidates(space, 40, seed=1))
    for c in cands[:10]:
        predictor.observe(c, true_ratio(space, stats, c))
    assert predictor.beyond(cands[10], 0.01)[0] is False  # error not known yet: never skip
    for c in cands[10:20]:
        predictor.observe(c, true_ratio(space, stats, c))
    budget = 0.6
    for c in cands[20:]:
        skip, predicted = predictor.beyond(c, budget)
        assert skip == (predicted > budget * (1 + predictor.margin))
        if skip:  # a skipped candidate is really over budget
            assert true_ratio(space, stats, c) > budget
    assert predictor.margin >= 0.15 and predictor.stats["skipped"] >= 0


# -- in the search ------------------------------------------------------------------------------
def test_search_skips_candidates_predicted_beyond_the_budget(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget far below what the tiny model reaches: once trained (on 6 here), sampled candidates
    predicted beyond it by the safe margin are pruned with the predicted figure, never measured;
    baselines always are; --no-predictor measures everything."""
    import autotune
    from autotune import predictor
    from autotune.records import Protocol
    from autotune.study_trials import PREDICTED_KEY, PREDICTION_KEY

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


def test_widths_propagate_through_the_graph_as_the_pruned_model_has_them(setup, tmp_path) -> None:
    """The MACs the graph features count after pruning equal those of the really pruned model."""
    from autotune.artifact import ArtifactBuilder
    from autotune.predictor import model_graph
    from autotune.recover import Recovery
    from autotune.space import Candidate

    space, stats, task = setup
    builder = ArtifactBuilder(task, space, tmp_path / "a", recovery=Recovery(mode="none"))
    reference = builder.build(space.candidate({})).path
    predictor = LatencyPredictor(space, stats, graph=model_graph(reference))
    x = {"input": task.example_inputs[0].numpy()}
    total = sum(s.macs for s in stats.values())
    widths = [p for p in space.parameters() if p.endswith(":width")]
    assert widths, "the tiny model has prunable layers"
    cands = [space.candidate(dict.fromkeys(widths, 0.5)), *random_candidates(space, 4, seed=2)]
    for c in cands:
        widths_only = {n: {k: v for k, v in cfg.items() if k == "width"} for n, cfg in c.layers.items()}
        pruned = builder.build(Candidate(layers=widths_only, runtime=c.runtime))  # FP32: weights readable
        truth = sum(s.macs for s in layer_stats(pruned.path, x).values()) / total
        f = predictor.features(c)
        assert f[0] + f[1] + f[2] == pytest.approx(truth, rel=0.02)  # FP32 + int8 + other MAC shares
