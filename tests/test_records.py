"""Typed records all the way: the study's attribute keys live in one module, a measurement's
flags are typed fields, and both keep the stored and wire shapes of the previous version."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import autotune
from autotune.knobs import deployment
from autotune.records import LatencyStats, LoadShares, Measurement, RuntimeOptions
from autotune.study import Baseline, TrialRecord
from autotune.wire import json_safe, measurement_from_wire

PKG = Path(autotune.__file__).parent
#: the one module that reads and writes Optuna study and trial attributes
RECORDS = PKG / "study" / "_records.py"
#: Measurement's fields in the previous version (commit caaee44): its readers keep only these
OLD_FIELDS = {
    *("status", "backend", "n", "median_ms", "mean_ms", "min_ms", "p90_ms", "p99_ms", "iqr_ms", "cv"),
    *("runs_per_sample", "samples_ms", "load_ms", "first_run_ms", "steady_s", "retries", "error"),
    *("runtime", "protocol", "fingerprint", "drift_ratio", "cached", "extra", "ratio", "ratio_ci"),
    *("reference_sha256", "reference_median_ms"),
}

#: a measurement as the previous version stored it (trial attribute, cache, agent reply), with
#: every flag and figure it kept under ``extra``
OLD_STORED = {
    "status": "unstable",
    "backend": "tensorrt",
    "n": 3,
    "median_ms": 2.0,
    "mean_ms": 2.0,
    "min_ms": 1.0,
    "p90_ms": 3.0,
    "p99_ms": 3.0,
    "iqr_ms": 1.0,
    "cv": 0.5,
    "runs_per_sample": 1,
    "samples_ms": [1.0, 2.0, 3.0],
    "load_ms": 5.0,
    "first_run_ms": 4.0,
    "steady_s": 0.1,
    "retries": 2,
    "error": None,
    "runtime": {"threads": 1, "graph_optimization": "all", "affinity": None, "precision": "fp16"},
    "protocol": {},
    "fingerprint": {"backend": "tensorrt"},
    "drift_ratio": 1.3,
    "cached": False,
    "extra": {
        "drift_flag": True,
        "host_busy": 0.42,
        "host_load": {"foreign_cpu": 0.4, "steal": 0.02, "own_cpu": 0.9, "wall_s": 1.5},
        "unstable_reason": "IQR/median 50% > 10%",
        "paired": True,
        "warmup_s": 0.5,
        "warmup_runs": 10,
        "cpu_share_attempts": [0.61, 0.58],
        "reference_stats": {"median_ms": 4.0, "mean_ms": 4.1, "min_ms": 3.9, "p90_ms": 4.3, "p99_ms": 4.4}
        | {"iqr_ms": 0.1, "cv": 0.02},
        "provider_options": {"trt_fp16_enable": "True"},
        "gpu_compute": {"n": 3, "median_ms": 1.5, "mean_ms": 1.5, "min_ms": 1.4, "p90_ms": 1.6}
        | {"p99_ms": 1.6, "iqr_ms": 0.1, "cv": 0.05},
        "host_io_ms": 2.5,
        "h2d_ms": 0.3,
        "d2h_ms": 0.2,
        "cuda_graph": "captured",
        # diagnostics stay in extra
        "canary": {"median_ms": 0.1, "reference_ms": 0.08, "status": "ok", "jobs_since": 3},
        "agent": {"url": "https://edge:8765", "job_id": "j1"},
        "capped": False,
    },
    "ratio": 0.5,
    "ratio_ci": [0.49, 0.51],
    "reference_sha256": "ab" * 32,
    "reference_median_ms": 4.0,
}


def _parsed() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text()) for p in PKG.rglob("*.py") if "_vendor" not in p.parts}


def _names(node: ast.AST) -> str | None:
    """The attribute or keyword a node names (``t.user_attrs``, ``enqueue_trial(user_attrs=...)``)."""
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.arg if isinstance(node, ast.keyword) else None


def test_only_the_records_module_touches_study_attributes() -> None:
    keys = {"user_attrs", "set_user_attr", "system_attrs", "set_system_attr"}
    found = [
        f"{path.relative_to(PKG.parent)}: {_names(node)}"
        for path, tree in _parsed().items()
        if path != RECORDS
        for node in ast.walk(tree)
        if _names(node) in keys
    ]
    assert not found, "study attributes are read and written in autotune/study/_records.py only:\n" + (
        "\n".join(found)
    )


def _reads_extra(node: ast.AST) -> bool:
    """``m.extra[key]`` (not an assignment), ``m.extra.get(...)`` / ``.pop(...)``, ``key in m.extra``."""

    def is_extra(n: ast.AST) -> bool:
        return isinstance(n, ast.Attribute) and n.attr == "extra"

    if isinstance(node, ast.Subscript) and is_extra(node.value):
        return isinstance(node.ctx, ast.Load)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_extra(node.func.value):
        return node.func.attr in ("get", "pop", "__getitem__", "__contains__")
    if isinstance(node, ast.Compare):
        return any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and any(
            is_extra(c) for c in node.comparators
        )
    return False


def test_no_code_reads_a_measurement_extra_back_by_key() -> None:
    """What a later stage reads is a typed field; ``extra`` is written for people to read."""
    found = [
        f"{path.relative_to(PKG.parent)}: {ast.unparse(node)}"
        for path, tree in _parsed().items()
        for node in ast.walk(tree)
        if _reads_extra(node)
    ]
    assert not found, "read Measurement fields, not extra keys:\n" + "\n".join(found)


def test_the_extra_reader_check_sees_reads_and_lets_writes_pass() -> None:
    reads = ['m.extra["a"] + 1', 'm.extra.get("a")', '"a" in m.extra', 'x = m.extra.pop("a")']
    writes = ['m.extra["a"] = 1', "m.extra.update(a=1)", 'm.extra.setdefault("agent", {}).update(b=2)']
    assert all(any(_reads_extra(n) for n in ast.walk(ast.parse(s))) for s in reads)
    assert not any(_reads_extra(n) for s in writes for n in ast.walk(ast.parse(s)))


def test_a_measurement_stored_by_the_previous_version_reads_into_typed_fields() -> None:
    m = Measurement.from_dict(json.loads(json.dumps(OLD_STORED)))
    assert m.drift_flag is True and m.host_busy == 0.42 and m.interleaved is True
    assert m.host_load == LoadShares(foreign_cpu=0.4, steal=0.02, own_cpu=0.9, wall_s=1.5)
    assert math.isclose(m.host_load.busy, 0.42)
    assert m.unstable_reason == "IQR/median 50% > 10%" and (m.warmup_s, m.warmup_runs) == (0.5, 10)
    assert m.cpu_share_attempts == [0.61, 0.58] and m.reference_stats is not None
    assert m.reference_stats.iqr_ms == 0.1 and m.reference_stats.n is None
    assert m.gpu_compute == LatencyStats(1.5, 1.5, 1.4, 1.6, 1.6, 0.1, 0.05, n=3)
    assert (m.host_io_ms, m.h2d_ms, m.d2h_ms, m.cuda_graph) == (2.5, 0.3, 0.2, "captured")
    assert m.provider_options == {"trt_fp16_enable": "True"}
    assert set(m.extra) == {"canary", "agent", "capped"}  # the diagnostics stay where they were
    # ... and writes the same shape back: stored studies, caches and the wire do not change
    assert m.to_dict() == OLD_STORED
    # the export still carries the provider options a GPU measurement recorded
    options = deployment(RuntimeOptions(precision="fp16"), m.runtime, m.provider_options)
    assert options["provider_options"] == {"trt_fp16_enable": "True"}


def test_defaults_leave_their_keys_out_as_before() -> None:
    m = Measurement(status="ok", backend="ort-cpu", n=1, samples_ms=[1.0])
    d = m.to_dict()
    assert d["extra"] == {} and set(d) == OLD_FIELDS
    assert Measurement.from_dict(d) == m
    apart = Measurement(status="ok", backend="x", interleaved=False)  # measured apart: stored, as before
    assert apart.to_dict()["extra"] == {"paired": False}


def test_the_agent_wire_format_is_compatible_both_ways() -> None:
    # an agent of the previous version answers with the old shape (NaN sent as null)
    old = json.loads(json.dumps(json_safe({**OLD_STORED, "load_ms": math.nan})))
    old["extra"]["gpu_compute"]["cv"] = None  # a NaN figure inside extra, nulled on the wire
    m = measurement_from_wire(old)
    assert math.isnan(m.load_ms) and m.gpu_compute is not None and math.isnan(m.gpu_compute.cv)
    assert m.drift_flag and m.host_busy == 0.42
    # this version's agent answers with the same shape, which a previous client reads field by
    # field (it kept the keys it knew and read the flags from extra)
    wire = json.loads(json.dumps(json_safe(m.to_dict())))
    assert set(wire) <= OLD_FIELDS
    assert wire["extra"]["drift_flag"] is True and wire["extra"]["host_busy"] == 0.42
    assert wire["extra"]["paired"] is True and wire["extra"]["host_load"]["foreign_cpu"] == 0.4
    assert measurement_from_wire(wire).host_busy == 0.42


def test_baselines_are_typed_and_stored_as_their_names() -> None:
    for baseline in (Baseline.uniform("w0.5+int8"), Baseline.greedy(2), Baseline.final(12)):
        record = TrialRecord.of_baseline(baseline)
        back = TrialRecord.from_attrs(json.loads(json.dumps(record.to_attrs())))
        assert back.enqueued == baseline and back.baseline == baseline.name
    assert TrialRecord.of_baseline(Baseline.final(12)).to_attrs() == {
        "baseline": "final-kd#12",
        "final_of": 12,
    }
    assert TrialRecord.of_baseline(Baseline.greedy(2)).to_attrs() == {"baseline": "greedy2"}
    assert TrialRecord.from_attrs({"baseline": "floor"}).enqueued == Baseline("floor", "uniform")
    assert TrialRecord.from_attrs({}).enqueued is None
    # the predictor's figures are trial records too
    skipped = TrialRecord(predicted={"ratio": 0.9}, predicted_ratio=None).to_attrs()
    assert skipped == {"predicted": {"ratio": 0.9}}
    assert TrialRecord.from_attrs({"predicted_ratio": 0.51}).predicted_ratio == 0.51


def test_a_distributed_trial_records_its_worker_and_a_surplus_mark() -> None:
    record = TrialRecord(worker="host:123", surplus=True)
    assert record.to_attrs() == {"worker": "host:123", "surplus": True}  # under the keys they had
    assert TrialRecord.from_attrs(json.loads(json.dumps(record.to_attrs()))) == record
    assert TrialRecord().to_attrs() == {}  # not a surplus, no worker: nothing stored
