"""A study written by the previous version loads, summarises, reports and exports with this one,
with the same figures.

tests/data/stored_study/ was written by commit caaee44 (the flat layout before the stage
packages) with tests/data/make_stored_study.py: 12 trials of a flaky tiny model, 6 complete and
8 failed, two final recoveries, a confirmation round and host-busy flags on every measurement.
``expected.json`` beside it is what that version printed, reported and exported for it; the
headline figures are also written out below. Labels renamed since (issue 23, one name per
figure: "latency" is the study's figure, "in-window" the measuring window's raw ones; the export's
``latency_ms``/``window_*`` keys became ``in_window_ms``/``in_window_*``, and the report's table
gained the latency column) were updated in ``expected.json``; the numbers are that version's.
The report's prose on the accuracy floor that study recorded (issue 26: the "accuracy floor" and
"final recovery" facts, "under the budget and above the floor") was updated there too; its
summary, table, Pareto set, best and export are that version's exactly (a study stored before
final recovery's record counts its final trials in the recovery line, as it did).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from autotune import ParetoSet, cli
from autotune.study import Baseline, RunMeta, TrialRecord, load_confirmed

DATA = Path(__file__).parent / "data"
STORED = DATA / "stored_study"
EXPECTED = json.loads((STORED / "expected.json").read_text())


def _maker() -> ModuleType:
    """tests/data/make_stored_study.py: the same report reading as when the file was made."""
    spec = importlib.util.spec_from_file_location("make_stored_study", DATA / "make_stored_study.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    # a copy: reading a study must never write the committed file
    return Path(shutil.copytree(STORED, tmp_path / "stored"))


def _json(value: object) -> str:
    """Equality that holds for NaN too (stored statistics may be NaN)."""
    return json.dumps(value, sort_keys=True)


def test_the_stored_study_is_small_and_of_the_previous_version() -> None:
    assert EXPECTED["version"] == "0.1.0"
    assert sum(p.stat().st_size for p in STORED.rglob("*") if p.is_file()) < 400_000


def test_a_study_of_the_previous_version_loads_with_the_same_figures(run_dir: Path) -> None:
    result = ParetoSet.load(run_dir)
    # the headline figures that version printed
    assert result.best is not None and result.best.number == 0 and result.best.accuracy == 100.0
    assert [t.number for t in result.pareto] == [6, 12, 0]
    assert len(result.trials) == 6 and len(result.failures) == 8 and not result.skipped
    assert result.reference_accuracy == 100.0 and result.borderline == []
    assert result.trial(12).baseline == "final-kd#2" and result.trial(12).accuracy == 96.875
    assert result.trial(12).latency_ms == 0.03556460930742986
    assert result.failure_reasons() == {"evaluate": 8}
    # every trial's figures, as that version read them
    assert [t.number for t in result.pareto] == EXPECTED["pareto"] and result.best.number == EXPECTED["best"]
    for t in result.trials:
        e = EXPECTED["trials"][str(t.number)]
        assert (t.accuracy, t.latency_ms, t.size_bytes, t.feasible, t.baseline) == (
            e["accuracy"],
            e["latency_ms"],
            e["size_bytes"],
            e["feasible"],
            e["baseline"],
        )
        m = t.measurement
        assert (m.status, m.ratio) == (e["status"], e["ratio"])
        # the flags stored under ``extra`` come back as typed fields, and leave ``extra``
        assert m.host_busy == e["extra"].get("host_busy") and m.host_busy is not None
        assert m.drift_flag is bool(e["extra"].get("drift_flag")) and m.interleaved is e["extra"].get(
            "paired"
        )
        assert m.host_load is not None and m.host_load.busy >= m.host_busy - 1e-9
        assert m.warmup_runs is not None and m.reference_stats is not None
        assert not {"host_busy", "drift_flag", "paired", "host_load", "warmup_runs"} & set(m.extra)
    assert {str(f.number): [f.stage, f.reason] for f in result.failures} == EXPECTED["failures"]
    assert {str(k): v for k, v in result.confirmed.items()} == EXPECTED["confirmed"]
    assert result.summary() == EXPECTED["summary"].replace("{run_dir}", str(run_dir))
    assert result.table() == EXPECTED["table"]


def test_the_stored_attributes_read_back_into_records_that_write_them_unchanged(run_dir: Path) -> None:
    """The stored format did not change: each record of the old file, read and written again by
    this version, is the attribute that version wrote."""
    study = ParetoSet.load(run_dir).study
    for t in study.trials:
        assert _json(TrialRecord.from_trial(t).to_attrs()) == _json(t.user_attrs), t.number
    meta = RunMeta.from_study(study)
    assert meta is not None and _json(meta.to_attrs()) == _json(study.user_attrs["autotune"])
    assert load_confirmed(study) == {int(k): v for k, v in EXPECTED["confirmed"].items()}
    # baselines read back typed
    roles = {t.number: TrialRecord.from_trial(t).enqueued for t in study.trials}
    assert roles[0] == Baseline.uniform("fp32") and roles[12] == Baseline.final(2)
    assert roles[13] == Baseline("final-kd#3", "final", 3)


def test_the_report_and_export_commands_give_the_same_figures(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "report.html"
    assert cli.main(["report", str(run_dir), "-o", str(page)]) == 0
    lines = _maker().visible_text(page.read_text(), run_dir)
    # every line that carries a figure reads as it did: the chosen trial, its flags, the Pareto
    # table, the failures (headings and prose may change; the numbers may not)
    assert [x for x in lines if any(c.isdigit() for c in x)] == [
        x for x in EXPECTED["report"] if any(c.isdigit() for c in x)
    ]
    assert "flagged: host busy (80% of CPUs to other processes)" in lines
    out = tmp_path / "best.onnx"
    assert cli.main(["export", str(run_dir), "-o", str(out)]) == 0
    assert "trial 0: 100.00 agreement, latency 0.037 ms" in capsys.readouterr().out
    exported = json.loads(out.with_suffix(".json").read_text())
    assert {k: v for k, v in exported.items() if k != "fingerprint"} == EXPECTED["export"]
    assert exported["latency"]["confirmed"]["ratio"] == 1.0034615583035218
    assert out.read_bytes() == (run_dir / "artifacts" / f"{exported['sha256']}.onnx").read_bytes()
