"""End-to-end searches through the Python API on small models (quick protocol)."""

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
import torch
from tiny_tasks import agreement_task, conv_task, flaky_task

import autotune
from autotune import cli
from autotune.devices import Protocol
from autotune.result._pareto import ParetoSet
from autotune.task.zoo import MLP, ConcatNet, TinyTransformer

QUICK = Protocol.quick()


def run(task: autotune.Task, tmp_path: Path, **kw: object) -> autotune.ParetoSet:
    kw.setdefault("budget", "50ms")
    kw.setdefault("trials", 8)
    # trial counts are asserted here: final recovery (extra trials, as many as its share of the
    # wall time fits) is tested on its own in test_floor.py and test_search_guided.py
    kw.setdefault("recover_final_steps", 0)
    return autotune.search(
        task, out_dir=tmp_path / "runs", protocol=QUICK, progress=False, report=False, **kw
    )


def test_search_returns_feasible_pareto_set_with_baselines(tmp_path: Path) -> None:
    result = run(conv_task(), tmp_path, study_name="s")
    assert len(result.trials) == 8
    assert set(result.baselines) == {
        "fp32",
        "int8",
        "w0.75",
        "w0.5",
        "w0.75+int8",
        "w0.5+int8",
        "w0.25",
        "w0.25+int8",
    }
    assert result.pareto and all(t.feasible for t in result.pareto)
    assert result.best is not None and result.best.accuracy == max(t.accuracy for t in result.feasible)
    fp32 = result.baselines["fp32"]
    assert fp32.accuracy == 100.0  # the unmodified model agrees with itself, through ORT
    # non-domination: no member is beaten by another trial (a latency difference inside the two
    # trials' measurement resolution does not count)
    from autotune.measure.confirm import dominates, figure

    def fig(t):
        return figure(t.number, t.accuracy, t.latency_ms, t.size_bytes, t.measurement)

    for m in result.pareto:
        assert not any(dominates(fig(t), fig(m)) for t in result.feasible)
    # every measurement kept its samples and statistics
    m = fp32.measurement
    assert m.n >= QUICK.min_samples and m.min_ms <= m.median_ms <= m.p90_ms <= m.p99_ms
    assert m.fingerprint["backend"] == "ort-cpu" and m.runtime["threads"] == 1
    # int8 really is int8 in the artifact
    ops = {n.op_type for n in onnx.load(str(result.baselines["int8"].artifact_path)).graph.node}
    assert "DequantizeLinear" in ops
    # stage timings are recorded for the cost split
    # (the unmodified export happens once, for the latency reference, before the first trial)
    assert {"quantize", "measure", "evaluate"} <= set(fp32.timings)
    assert "export" in result.baselines["w0.5"].timings


def test_accuracy_is_measured_on_the_artifact_not_the_torch_model(tmp_path: Path) -> None:
    seen: list[str] = []
    task = conv_task()
    inner = task.evaluate

    def evaluate(runner: autotune.Runner) -> float:
        seen.append(str(runner.model_path))
        return inner(runner)

    task.evaluate = evaluate
    result = run(task, tmp_path, trials=6)
    artifacts = {str(t.artifact_path) for t in result.trials}
    # every artifact, plus each pruned candidate's build before recovery (its "before" accuracy)
    assert artifacts <= set(seen)
    assert all(p.endswith("unrecovered.onnx") for p in set(seen) - artifacts)
    # a narrower model really was measured and scored: width 0.5 shrinks the file
    assert result.baselines["w0.5"].size_bytes < 0.5 * result.baselines["fp32"].size_bytes


def test_resume_continues_to_the_requested_count(tmp_path: Path) -> None:
    first = run(conv_task(), tmp_path, trials=7, study_name="resume")
    assert len(first.trials) == 7
    second = run(conv_task(), tmp_path, trials=10, study_name="resume")
    assert len(second.trials) == 10
    numbers = sorted(t.number for t in second.trials)
    assert numbers[:7] == sorted(t.number for t in first.trials)
    # baselines were not enqueued a second time
    assert sum(1 for t in second.trials if t.baseline) == 8


def test_failed_candidates_become_failed_trials_and_the_study_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root_level, verbosity = logging.getLogger().level, optuna.logging.get_verbosity()
    result = run(flaky_task(), tmp_path, trials=8, study_name="flaky")
    # no process-wide side effects: logger levels are as they were, no warning filter of ours is left
    assert (logging.getLogger().level, optuna.logging.get_verbosity()) == (root_level, verbosity)
    assert not [f for f in warnings.filters if f[2] is optuna.exceptions.ExperimentalWarning]
    assert result.failures, "int8 candidates fail in evaluate"
    assert all(f.stage == "evaluate" for f in result.failures)
    failed = result.failures[0]
    assert "exploded on purpose" in failed.reason and "\n" not in failed.reason
    assert len(result.trials) + len(result.failures) == 8
    assert "fp32" in result.baselines
    # the one-line reason is in the summary, the full traceback in a file beside the study
    assert failed.traceback_path == result.run_dir / "failures" / f"{failed.number}.txt"
    text = failed.traceback_path.read_text()
    assert text.startswith("Traceback") and "in evaluate" in text
    assert "RuntimeError: evaluation exploded on purpose" in text
    assert f"full tracebacks in {result.run_dir / 'failures'}" in result.summary()
    assert cli.main(["export", str(result.run_dir), "--trial", str(failed.number)]) == 2
    assert f"full traceback: {failed.traceback_path}" in capsys.readouterr().err


def test_no_feasible_candidate_is_said_plainly_and_everything_is_saved(tmp_path: Path) -> None:
    result = run(conv_task(), tmp_path, budget="1us", trials=6, study_name="tight")
    assert result.best is None and not result.pareto
    assert len(result.trials) == 6
    summary = result.summary()
    assert "NO candidate met the budget" in summary
    assert len(result.fastest(3)) == 3
    assert str(result.fastest(1)[0].number) in summary


def test_export_writes_the_measured_artifact_and_its_record(tmp_path: Path) -> None:
    result = run(conv_task(), tmp_path, trials=6, study_name="exp")
    best = result.best
    out = best.export(tmp_path / "out" / "best.onnx")
    assert out.read_bytes() == best.artifact_path.read_bytes()
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["trial"] == best.number and record["in_window_ms"]["median"] == best.measurement.median_ms
    assert record["config"] == best.candidate.to_dict()
    # the study's latency: reference latency x ratio, with the ratio's interval and the reference
    lat, m = record["latency"], best.measurement
    assert lat["ms"] == pytest.approx(best.latency_ms) and lat["ratio"] == m.ratio
    assert lat["ratio_ci"][0] <= lat["ratio"] <= lat["ratio_ci"][1]
    assert lat["reference_median_ms"] * lat["ratio"] == pytest.approx(best.latency_ms)
    assert lat["reference_sha256"] == result.meta.reference["sha256"]
    assert lat["in_window_median_ms"] == m.median_ms
    assert lat["confirmed"]["ratio"] == result.confirmed[best.number]["ratio"]  # best is confirmed
    # the storage alone rebuilds the same result
    again = ParetoSet.load(tmp_path / "runs" / "exp")
    assert [t.number for t in again.pareto] == [t.number for t in result.pareto]


@pytest.mark.parametrize(
    ("make", "shape"),
    [(TinyTransformer, (32, 16, 64)), (MLP, (64, 64)), (ConcatNet, (32, 1, 32, 32))],
    ids=["transformer", "mlp", "concat"],
)
def test_models_the_core_tests_never_saw(tmp_path: Path, make: type, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    task = agreement_task(make(), torch.randn(*shape), make.__name__)
    result = run(task, tmp_path, trials=8)
    assert len(result.trials) + len(result.failures) == 8
    assert not result.failures, [f.reason for f in result.failures]
    assert result.best is not None
    if make is TinyTransformer:
        space = result.meta.space
        assert any(4 in layer["knobs"]["bits"] for layer in space["layers"])


def test_plain_model_api_with_defaults(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval()
    x = torch.randn(128, 32)
    labels = model(x).argmax(1).numpy()

    def evaluate(runner: autotune.Runner) -> float:
        return float(np.mean(runner(x).argmax(1) == labels) * 100)

    result = autotune.search(
        model,
        x[:1],
        evaluate=evaluate,
        budget="10ms",
        trials=6,
        out_dir=tmp_path,
        protocol=QUICK,
        progress=False,
        report=False,
    )
    assert result.best is not None
    storage = f"sqlite:///{tmp_path / result.study.study_name / 'study.db'}"
    assert optuna.load_study(study_name=result.study.study_name, storage=storage).trials


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"budget": "fast"}, "not a latency"),
        ({"budget": "10ms", "trials": 0}, "--trials 0: must be at least 1"),
        ({"budget": "10ms", "threads": 0}, "--threads 0: must be at least 1"),
    ],
)
def test_bad_options_fail_before_any_model_work(tmp_path: Path, options: dict, needle: str) -> None:
    with pytest.raises(autotune.UserError, match=needle):
        autotune.search(conv_task(), out_dir=tmp_path / "runs", **options)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(TypeError, match="trails"):
        autotune.search(conv_task(), budget="10ms", trails=5)


def test_run_records_round_trip_through_optuna_attrs() -> None:
    from autotune.records import Measurement, RuntimeOptions
    from autotune.space._space import Candidate
    from autotune.study._records import RunMeta, TrialRecord

    samples = [float(i) for i in range(1000)]
    record = TrialRecord(
        candidate=Candidate({"stem": {"bits": 8}}, RuntimeOptions(threads=2)),
        artifact_path="artifacts/ab.onnx",
        sha256="ab",
        size_bytes=10,
        measurement=Measurement(status="ok", backend="ort-cpu", n=1000, samples_ms=samples),
        timings={"export": 0.5},
        fail_stage="evaluate",
        fail_reason="evaluate: boom",
        traceback="failures/3.txt",
    )
    attrs = record.to_attrs()
    # the stored keys are those earlier runs wrote, so old studies still load
    assert set(attrs) == {
        "config",
        "artifact",
        "measurement",
        "timings",
        "fail_stage",
        "fail_reason",
        "traceback",
    }
    assert len(attrs["measurement"]["samples_ms"]) == 256  # capped for storage
    back = TrialRecord.from_attrs(json.loads(json.dumps(attrs)))
    assert (
        back.candidate == record.candidate and back.failed_by_candidate and back.traceback == "failures/3.txt"
    )
    assert TrialRecord(baseline="fp32").to_attrs() == {"baseline": "fp32"}
    assert not TrialRecord.from_attrs({}).failed_by_candidate

    meta = RunMeta(task="t", budget_ms=0.6, budget="0.6ms", measurer={"measured": 3})
    stored = json.loads(json.dumps(meta.to_attrs()))
    assert stored["last_run"] == {"measurer": {"measured": 3}} and "sensitivity" not in stored
    assert RunMeta.from_attrs(stored) == meta
    assert RunMeta.from_attrs({}).budget_ms == float("inf")
