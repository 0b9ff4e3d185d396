"""Defaults that never tell a user to ship a collapsed model (issue 26): the default accuracy
floor, the plain message when nothing meets both limits, and final recovery bounded in time."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from torch import nn

import autotune
from autotune import cli
from autotune.budget import parse_floor_option, parse_max_drop
from autotune.build import Recovery, distill
from autotune.errors import UserError
from autotune.records import Protocol
from autotune.study import FinalRecovery, SearchConfig, final_recovery

#: no absolute minimum of distillation time in the tests: they must not depend on the host's speed
MIN_FINAL_TRAIN_S = "autotune.study._final.MIN_FINAL_TRAIN_S"

WIDTH_ONLY = "knobs:\n  width: [1.0, 0.75, 0.5, 0.25]\n  sparsity: [0.0]\n  bits: [32]\n"


def collapsing_demo(tmp_path: Path, **kw: Any) -> autotune.ParetoSet:
    """The trained demo model with no recovery data and no finetune: its pruned candidates keep
    stale BatchNorm statistics and collapse to about chance (10% on 10 digits). Width only, so
    every candidate under the budget is a pruned one."""
    from autotune.task.demo import demo_task

    task = demo_task()
    task.finetune = None
    task.recovery_data = kw.pop("recovery_data", [])  # [] : BatchNorm recovery and distillation get nothing
    space = tmp_path / "width.yaml"
    space.write_text(WIDTH_ONLY)
    kw.setdefault("budget", "50%")
    kw.setdefault("trials", 6)
    return autotune.search(
        task, space=str(space), out_dir=tmp_path / "runs", protocol=Protocol.quick(), progress=False, **kw
    )


def test_the_defaults_are_a_5pct_floor_and_bounded_final_recovery() -> None:
    cfg = SearchConfig(budget="50%")
    assert cfg.max_drop == "5%" and cfg.floor == parse_max_drop("5%")
    assert cfg.recover_final_steps == 300 and cfg.final_share == pytest.approx(0.2)
    for off in (None, "none", "None", " off "):
        assert SearchConfig(budget="50%", max_drop=off).floor is None
    assert SearchConfig(budget="50%", recover_final_share=0.5).final_share == 0.5
    assert SearchConfig(budget="50%", recover_final_share="0").final_share == 0.0
    for bad in ("20", "-5%", "lots", "nan%"):  # a bare 20 is ambiguous: 20% or 20x?
        with pytest.raises(UserError, match="--recover-final-share"):
            SearchConfig(budget="50%", recover_final_share=bad)
    # the CLI says the same, and --max-drop none turns the floor off
    parser, _ = cli.make_parser("search")
    args = parser.parse_args(["--budget", "50%"])
    assert args.max_drop == "5%" and args.recover_final_steps == 300 and args.recover_final_share == "20%"
    args = parser.parse_args(["--budget", "50%", "--max-drop", "none"])
    assert parse_floor_option(args.max_drop) is None


def test_a_relative_floor_is_taken_from_the_scores_magnitude() -> None:
    assert parse_max_drop("5%").floor(98.0) == pytest.approx(93.1)
    assert parse_max_drop("5%").floor(-2.0) == pytest.approx(-2.1)  # a negated loss: below, not above


def test_a_collapsed_model_is_never_the_best_and_the_summary_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = collapsing_demo(tmp_path, study_name="collapse")
    ref = result.reference_accuracy
    assert ref is not None and ref > 90 and result.floor == pytest.approx(0.95 * ref)
    pruned_under = [
        t for t in result.trials if t.candidate.layers and result.limit.within(t.latency_ms, t.ratio)
    ]
    assert pruned_under and all(t.accuracy < result.floor for t in pruned_under)  # collapsed, on purpose
    # nothing is named: not best, not '*', not "Ship trial", not export without --trial
    assert result.best is None and not result.pareto
    summary = result.summary()
    assert "*" not in result.table()
    assert "NO candidate meets both the budget" in summary
    under = result.most_accurate_under_budget()
    above = result.fastest_above_floor()
    assert under is not None and f"The most accurate under the budget: trial {under.number}" in summary
    assert above is not None and f"The fastest above the floor: trial {above.number}" in summary
    # ... and what could close the gap: here, data to recover on (final recovery had none)
    assert "final recovery: no unlabeled inputs" in summary
    assert "Could close the gap: unlabeled inputs to distil on" in summary and "--max-drop none" in summary
    assert result.report_path is not None
    html = result.report_path.read_text()
    assert "Ship trial" not in html and "No trial met both the budget and the accuracy floor" in html
    assert cli.main(["export", str(result.run_dir), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "accuracy floor" in capsys.readouterr().err
    # the floor is what stopped it: the same study read without one names the collapsed candidate
    loose = autotune.ParetoSet.load(result.run_dir, max_drop=None)
    assert len(loose.trials) == len(result.trials) and loose.floor is None
    assert loose.best is not None and loose.best.accuracy < result.floor
    assert autotune.ParetoSet.load(result.run_dir, max_drop="5%").floor == pytest.approx(result.floor)
    # a search joining the study must keep its floor: another one is refused, naming it
    with pytest.raises(UserError, match="max-drop '5%' \\(this worker: None\\)"):
        collapsing_demo(tmp_path, study_name="collapse", max_drop=None, report=False)


def test_final_recovery_distils_collapsed_finalists_as_new_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # recovery data this time, but no recovery during the search: its pruned candidates collapse,
    # and final recovery (BatchNorm statistics + distillation) re-builds the finalists. The whole
    # search's wall time again is allowed and no absolute minimum, so that the first finalist fits
    # (1.5 trials' time) on a fast host as on a slow one
    monkeypatch.setattr(MIN_FINAL_TRAIN_S, 0.0)
    result = collapsing_demo(
        tmp_path,
        recovery_data=None,
        recover="none",
        recover_final_steps=20,
        recover_final_share="100%",
        report=False,
    )
    final = result.meta.search["final"]
    assert final["status"] == "ran" and final["allowance_s"] > 0 and final["trials"]
    assert final["steps"] == 20 and final["share"] == 1.0
    by_number = {t.number: t for t in result.trials}
    for n in final["trials"]:
        t = by_number[n]
        origin = by_number[int(str(t.baseline).split("#")[1])]
        assert t.baseline == f"final-kd#{origin.number}" and t.candidate == origin.candidate
        assert t.recovery is not None and "kd" in t.recovery["ran"] and 1 <= t.recovery["kd_steps"] <= 20
    assert "final recovery:" in result.summary() and "finalist(s)" in result.summary()
    assert result.best is None or result.best.accuracy >= result.floor  # the floor holds, recovered or not


def _study(rows: list[tuple[float, float, float, float]]) -> optuna.Study:
    """(width, accuracy, latency ms, size) rows of pruned trials under a 5 ms budget."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    dist = {"w": optuna.distributions.CategoricalDistribution([0.25, 0.5, 0.75, 1.0])}
    for w, acc, ms, size in rows:
        config = {"layers": {"conv": {"width": w}}}
        trial = optuna.trial.create_trial(
            params={"w": w}, distributions=dist, values=[acc, ms, size], user_attrs={"config": config}
        )
        study.add_trial(trial)
    return study


def test_final_recovery_runs_only_when_needed_and_within_its_time() -> None:
    rows = [(0.25, 10.0, 1.0, 100.0), (0.5, 30.0, 2.0, 400.0), (0.75, 80.0, 9.0, 900.0)]
    seen: list[tuple[int, float]] = []  # (the finalist, the seconds its distillation got)

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        trial.suggest_categorical("w", [0.25, 0.5, 0.75, 1.0])
        seen.append((trial.user_attrs["final_of"], trial.user_attrs["final_time_s"]))
        return 50.0, 1.0, 100.0

    def run(floor: float, search_s: float, plan: FinalRecovery | None = None, **kw: Any) -> FinalRecovery:
        study = _study(rows)
        run_trial = partial(study.optimize, objective, n_trials=1)
        return final_recovery(study, 5.0, floor, plan or FinalRecovery(300, 0.2), search_s, run_trial, **kw)

    # every pruned candidate under the budget within the floor: nothing to do
    assert run(5.0, 100.0).status == "not needed"
    assert run(50.0, 100.0, has_data=False).status == "no data"
    assert run(50.0, 100.0, FinalRecovery(0, 0.2)).status == "off"
    assert run(50.0, 100.0, stopped="timeout").status == "stopped"
    # no time: an allowance of 20% of no wall time fits no finalist
    none = run(50.0, 0.0)
    assert none.status == "no time" and none.left_out == 2 and not seen
    # enough time: the most accurate first, then the largest, each a new trial with the time left
    done = run(50.0, 1e6)
    assert [n for n, _ in seen] == [1, 0]  # trial 2 is over the budget
    assert all(0 < s <= 0.2 * 1e6 for _, s in seen) and done.finalists == 2 and done.left_out == 0
    assert done.status == "ran" and done.trials == [3, 4]  # the new trials
    # a finalist already as accurate as the unmodified model has nothing to gain: left out
    seen.clear()
    assert run(50.0, 1e6, reference=30.0).trials == [3] and [n for n, _ in seen] == [0]
    assert run(50.0, 1e6, reference=5.0).status == "not needed"


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_distillation_stops_at_its_time_limit() -> None:
    torch.manual_seed(0)
    batches = [(torch.randn(16, 8),)]
    teacher, student = _Net(), _Net()
    assert distill(student, teacher, batches, Recovery(mode="kd", steps=7)) == 7
    # a limit already spent: one step, and the schedule never runs past the requested steps
    assert distill(student, teacher, batches, Recovery(mode="kd", steps=7, time_limit_s=0.0)) == 1
    assert distill(student, teacher, batches, Recovery(mode="kd", steps=7, time_limit_s=1e6)) == 7
