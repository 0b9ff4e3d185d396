"""The search's guide rails, end to end: relative budgets, the reference model, the feasibility
probe, the accuracy floor, recovery records, sensitivity guidance, samplers and the timeout."""

from pathlib import Path

import pytest
from tiny_tasks import conv_task

import autotune
from autotune.errors import UserError
from autotune.records import Protocol


def run(tmp_path: Path, **kw: object) -> autotune.ParetoSet:
    kw.setdefault("budget", "50ms")
    kw.setdefault("trials", 10)
    return autotune.search(
        conv_task(), out_dir=tmp_path / "runs", protocol=Protocol.quick(), progress=False, report=False, **kw
    )


def test_a_relative_budget_is_a_share_of_the_measured_unmodified_model(tmp_path: Path) -> None:
    result = run(tmp_path, budget="60%", trials=9)
    ref = result.meta.reference
    assert ref is not None and ref["accuracy"] == 100.0
    assert result.meta.budget_ms == pytest.approx(0.6 * ref["latency_ms"])
    assert result.meta.budget.startswith("60% of FP32 = ")
    assert result.study.study_name.endswith("-60pct")
    # a relative budget is decided on the ratio alone (not on reference estimate x ratio)
    assert result.meta.budget_fraction == 0.6 and result.limit.fraction == 0.6
    assert all(t.ratio is not None and t.feasible == (t.ratio <= 0.6) for t in result.trials)
    # recovery ran on the pruned baselines and both accuracies are recorded
    narrow = result.baselines["w0.5"]
    assert narrow.recovery is not None and narrow.recovery["ran"] == ["bn"]
    assert isinstance(narrow.recovery["accuracy_before"], float)
    assert "recovery (bn)" in result.summary()


def test_an_unreachable_budget_stops_after_the_probe_and_says_why(tmp_path: Path) -> None:
    result = run(tmp_path, budget="1%", trials=20, study_name="tight")
    assert result.meta.stopped == "infeasible"
    assert len(result.trials) == len(result.baselines) < 20  # the probe only
    summary = result.summary()
    assert "infeasible: the budget of" in summary and "% of FP32" in summary
    assert "Could go lower" in summary and "--keep-going" in summary
    assert result.best is None
    going = run(tmp_path, budget="1%", trials=12, study_name="tight2", keep_going=True)
    assert len(going.trials) == 12 and going.meta.stopped is None and going.meta.infeasible


def test_the_accuracy_floor_is_a_second_constraint_best_respects(tmp_path: Path) -> None:
    result = run(tmp_path, max_drop=0.0, trials=10)
    assert result.meta.floor == 100.0
    assert result.best is not None and result.best.accuracy >= 100.0
    assert all(t.accuracy >= 100.0 for t in result.pareto)
    assert "accuracy floor: 100.00" in result.summary()


def test_nothing_meeting_both_limits_is_said_plainly(tmp_path: Path) -> None:
    result = run(tmp_path, budget="35%", max_drop="0%", trials=9, keep_going=True)
    under = [t for t in result.trials if t.latency_ms <= result.meta.budget_ms]
    if result.best is None and under:
        assert "NO candidate meets both the budget" in result.summary()
    else:  # a lossless candidate under 35% exists on this machine: it is the best
        assert result.best is None or result.best.accuracy == 100.0


def test_the_timeout_ends_the_search_cleanly_and_keeps_everything(tmp_path: Path) -> None:
    result = run(tmp_path, trials=200, timeout="2s", study_name="timed")
    assert result.meta.stopped == "timeout"
    assert len(result.trials) < 200  # the reference and the probe count against the clock too
    assert "stopped by --timeout" in result.summary()
    again = run(tmp_path, trials=len(result.trials) + 2, study_name="timed")  # resumes
    assert again.meta.stopped is None and len(again.trials) == len(result.trials) + 2


def test_sensitivity_guides_the_search_and_reaches_the_report_data(tmp_path: Path) -> None:
    result = run(tmp_path, budget="50%", trials=12, sensitivity=True, sampler="random", max_drop=50.0)
    sens = result.meta.sensitivity
    assert sens and "conv2" in sens and any(k.startswith("width") for k in sens["conv2"])
    assert (result.run_dir / "sensitivity.json").is_file()
    # how many greedy candidates the measured table gives depends on measured latencies (on this
    # tiny model, op count bounds latency and a table can show no change that saves time), so the
    # count is recorded and checked here, and greedy_candidates itself in test_sensitivity.py
    assert result.meta.search["greedy"] >= 0
    greedy = [t for name, t in result.baselines.items() if name.startswith("greedy")]
    uniform = [t.candidate for name, t in result.baselines.items() if not name.startswith("greedy")]
    assert all(t.candidate not in uniform for t in greedy)
    html = result.report(tmp_path / "r.html").read_text()
    assert "Per-layer sensitivity" in html and "before recovery" in html


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    for kw, needle in (
        ({"sampler": "cma"}, "--sampler"),
        ({"recover": "magic"}, "--recover"),
        ({"timeout": "soon"}, "--timeout"),
        ({"max_drop": "lots"}, "--max-drop"),
        ({"budget": "0%"}, "--budget"),
    ):
        with pytest.raises(UserError, match=needle):
            run(tmp_path, **kw)


def test_the_most_accurate_pruned_candidates_get_a_longer_recovery_at_the_end(tmp_path: Path) -> None:
    result = run(tmp_path, trials=8, recover_final_steps=5)
    finals = [t for t in result.trials if t.baseline and t.baseline.startswith("final-kd#")]
    assert 1 <= len(finals) <= 3
    for t in finals:
        assert t.recovery is not None and t.recovery["ran"] == ["bn", "kd"]
        original = result.trial(int(t.baseline.split("#")[1]))
        assert original.candidate == t.candidate
