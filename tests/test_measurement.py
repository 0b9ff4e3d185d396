"""The measurement protocol, the cache, drift detection and the measure/devices commands.

Protocol logic is checked with a deterministic fake clock; everything else runs real
onnxruntime sessions on small models. No assertion depends on how fast this machine is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from autotune import cli
from autotune.devices import BACKENDS, Measurement, OrtCpuDevice, Protocol, RuntimeOptions
from autotune.devices._lock import device_lock
from autotune.devices._protocol import run_protocol, summarize
from autotune.measure import Measurer
from autotune.measure._cache import MeasurementCache, cache_key
from autotune.measure._canary import canary_inputs, canary_proto, write_canary

QUICK = Protocol.quick()
LOADED = Protocol(warmup_s=0.05, warmup_runs=3, min_samples=32, min_time_s=0.2, max_retries=0)


# -- helpers ------------------------------------------------------------------------------
class FakeClock:
    """A clock that only moves when a fake run says so."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def fake_run(clock: FakeClock, durations_ms: Iterator[float]):
    def run() -> None:
        clock.t += next(durations_ms) / 1e3

    return run


def matmul_model(path: Path, dim: int = 64, seed: int = 0) -> Path:
    """A small real ONNX model: two MatMul+Relu on a (4, dim) input named 'input'."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((dim, dim)).astype(np.float32), f"w{i}") for i in range(2)
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "w0"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("MatMul", ["b", "w1"], ["c"]),
        helper.make_node("Relu", ["c"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def inputs_for(dim: int = 64) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(1).standard_normal((4, dim)).astype(np.float32)}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return matmul_model(tmp_path / "m.onnx")


@pytest.fixture(autouse=True)
def private_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests do not queue behind (or block) measurements of other processes on this machine
    monkeypatch.setenv("AUTOTUNE_LOCK_DIR", str(tmp_path / "locks"))


def start_burners(n: int) -> list[subprocess.Popen[bytes]]:
    """Real CPU load: n busy-loop processes."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait(timeout=10)


# -- statistics and protocol (fake clock: deterministic) ------------------------------------
def test_summarize_order_statistics() -> None:
    s = summarize([float(v) for v in range(1, 101)])
    assert s["n"] == 100 and s["min_ms"] == 1.0 and s["median_ms"] == 50.5 and s["mean_ms"] == 50.5
    assert s["p90_ms"] == pytest.approx(90.1) and s["p99_ms"] == pytest.approx(99.01)
    assert s["iqr_ms"] == pytest.approx(49.5)
    assert s["cv"] == pytest.approx(np.std(np.arange(1, 101), ddof=1) / 50.5)


@pytest.mark.parametrize(
    ("min_samples", "min_time_s", "expected_n"),
    [(10, 0.1, 50), (100, 0.01, 100)],  # the time threshold binds, then the count threshold
)
def test_protocol_stops_only_when_both_thresholds_hold(
    min_samples: int, min_time_s: float, expected_n: int
) -> None:
    clock = FakeClock()
    p = Protocol(warmup_s=0.05, warmup_runs=5, min_samples=min_samples, min_time_s=min_time_s, max_retries=0)
    m = run_protocol(fake_run(clock, iter(lambda: 2.0, None)), p, "fake", clock=clock)
    assert m.status == "ok" and m.runs_per_sample == 1
    assert m.n == expected_n and len(m.samples_ms) == expected_n
    assert m.warmup_runs == 25  # 0.05 s of 2 ms runs beats the 5-run minimum
    assert m.median_ms == pytest.approx(2.0) and m.iqr_ms == pytest.approx(0.0)
    assert m.steady_s == pytest.approx(expected_n * 2e-3) and not m.extra["capped"]


def test_protocol_batches_runs_shorter_than_min_sample_ms() -> None:
    clock = FakeClock()
    m = run_protocol(fake_run(clock, iter(lambda: 0.1, None)), QUICK, "fake", clock=clock)
    assert m.runs_per_sample == 10  # 10 x 0.1 ms per 1 ms sample
    assert m.median_ms == pytest.approx(0.1)  # samples are per-run latencies
    assert m.n >= QUICK.min_samples


def test_protocol_flags_unstable_after_two_retries() -> None:
    clock = FakeClock()
    noisy = iter(lambda: float(np.random.default_rng().choice([1.0, 3.0])), None)
    m = run_protocol(fake_run(clock, noisy), Protocol(warmup_s=0.0, min_time_s=0.0), "fake", clock=clock)
    assert m.status == "unstable" and m.retries == 2
    assert len(m.extra["rel_iqr_attempts"]) == 3 and min(m.extra["rel_iqr_attempts"]) > 0.10
    assert m.usable and m.n >= 64  # the numbers are kept, with the flag


def test_protocol_retry_recovers_when_noise_stops() -> None:
    clock = FakeClock()
    calls = {"n": 0}

    def run() -> None:
        calls["n"] += 1
        # 10 warm-up runs, then a noisy first attempt (64 samples), then steady 2 ms
        noisy = 10 < calls["n"] <= 74
        clock.t += (1.0 if calls["n"] % 2 else 3.0) / 1e3 if noisy else 2e-3

    m = run_protocol(run, Protocol(warmup_s=0.0, min_time_s=0.0), "fake", clock=clock)
    assert m.status == "ok" and m.retries == 1 and m.median_ms == pytest.approx(2.0)


@pytest.mark.parametrize(("cpu_ms", "status"), [(2.0, "ok"), (1.2, "unstable")])
def test_protocol_sees_preemption_through_the_threads_cpu_clock(cpu_ms: float, status: str) -> None:
    """A uniform slow-down (IQR stays 0) is caught when the thread got too little of a core."""
    wall, cpu = FakeClock(), FakeClock()

    def run() -> None:
        wall.t += 2e-3
        cpu.t += cpu_ms / 1e3

    m = run_protocol(run, Protocol(warmup_s=0.0, min_time_s=0.0), "fake", clock=wall, cpu_time=cpu)
    assert m.status == status and m.iqr_ms == pytest.approx(0.0)
    assert m.cpu_share_attempts is not None and m.cpu_share_attempts[0] == pytest.approx(cpu_ms / 2.0)
    if status == "unstable":
        assert m.retries == 2 and "60% of a CPU core" in (m.unstable_reason or "")


def test_protocol_caps_a_slow_model_at_max_time() -> None:
    clock = FakeClock()
    p = Protocol(warmup_s=0.0, warmup_runs=1, min_samples=1000, min_time_s=0.0, max_time_s=0.2, max_retries=0)
    m = run_protocol(fake_run(clock, iter(lambda: 10.0, None)), p, "fake", clock=clock)
    assert m.extra["capped"] and m.n == 20


# -- the ORT CPU backend, real sessions -----------------------------------------------------
def test_ort_cpu_measurement_carries_phases_stats_and_fingerprint(model: Path) -> None:
    m = OrtCpuDevice().measure(model, inputs_for(), RuntimeOptions(threads=1), QUICK)
    assert m.usable and m.status in ("ok", "unstable")
    assert m.n >= QUICK.min_samples and len(m.samples_ms) == m.n
    assert 0 < m.min_ms <= m.median_ms <= m.p90_ms <= m.p99_ms
    assert m.load_ms > 0 and m.first_run_ms > 0 and m.steady_s >= QUICK.min_time_s
    assert m.warmup_runs is not None and m.warmup_runs >= QUICK.warmup_runs
    fp = m.fingerprint
    assert fp["backend"] == "ort-cpu" and fp["onnxruntime"] and fp["cpu_model"] and fp["logical_cores"] >= 1
    assert (
        m.host_load is not None
        and {"foreign_cpu", "own_cpu"} <= set(m.host_load.to_dict())
        and "load_avg_1m" in m.extra["host_state"]
    )
    assert m.runtime["threads"] == 1
    # the record survives a JSON round trip (trial user attrs, cache, agent wire)
    again = Measurement.from_dict(json.loads(json.dumps(m.to_dict(max_samples=8))))
    assert again.median_ms == m.median_ms and len(again.samples_ms) == min(8, m.n)


def test_threads_and_affinity_are_explicit_and_restored(model: Path) -> None:
    before = os.sched_getaffinity(0)
    core = min(before)
    m = OrtCpuDevice().measure(model, inputs_for(), RuntimeOptions(threads=2, affinity=(core,)), QUICK)
    assert m.usable and m.runtime["threads"] == 2 and m.runtime["affinity"] == [core]
    assert os.sched_getaffinity(0) == before


def test_failures_are_results_not_exceptions(tmp_path: Path, model: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    m = OrtCpuDevice().measure(bad, inputs_for(), RuntimeOptions(), QUICK)
    assert m.status == "invalid_model" and m.error and not m.usable
    m = OrtCpuDevice().measure(model, {"wrong": np.zeros((4, 64), np.float32)}, RuntimeOptions(), QUICK)
    assert m.status == "runtime_error" and "input" in (m.error or "")
    m = OrtCpuDevice().measure(model, {"input": np.zeros((4, 3), np.float32)}, RuntimeOptions(), QUICK)
    assert m.status == "runtime_error"


def test_one_measurement_per_device_across_processes(tmp_path: Path, model: Path) -> None:
    released = tmp_path / "released"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from autotune.devices._lock import device_lock
            with device_lock("cpu"):
                print("locked", flush=True)
                time.sleep(1.5)
                open({str(released)!r}, "w").write(repr(time.time()))
        """),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        with pytest.raises(TimeoutError), device_lock("cpu", timeout_s=0.1):
            pass
        started = time.time()
        m = OrtCpuDevice().measure(model, inputs_for(), RuntimeOptions(), QUICK)
        acquired = started + m.extra["lock_wait_s"]
        assert acquired >= float(released.read_text()) - 0.05  # it waited for the other process
        assert m.usable
    finally:
        holder.kill()
        holder.wait()


# -- cache --------------------------------------------------------------------------------
def test_cache_serves_identical_requests_and_remeasure_forces(tmp_path: Path, model: Path) -> None:
    cache_dir = tmp_path / "measurements"
    first = Measurer(OrtCpuDevice(), QUICK, cache_dir=cache_dir, canary_every=0)
    m1 = first.measure(model, inputs_for(), RuntimeOptions())
    assert not m1.cached and first.stats["measured"] == 1 and first.stats["cache_hits"] == 0

    second = Measurer(OrtCpuDevice(), QUICK, cache_dir=cache_dir, canary_every=0)  # a resumed study
    m2 = second.measure(model, inputs_for(), RuntimeOptions())
    assert m2.cached and m2.median_ms == m1.median_ms and m2.samples_ms == m1.samples_ms
    assert second.stats["measured"] == 0 and second.stats["cache_hits"] == 1
    entry = json.loads(next(cache_dir.glob("*.json")).read_text())
    assert {"artifact", "fingerprint", "runtime", "protocol", "inputs", "backend"} <= set(entry["key"])

    # any part of the key changes -> a fresh measurement
    second.measure(model, inputs_for(), RuntimeOptions(threads=2))
    other = Measurer(OrtCpuDevice(), replace(QUICK, min_samples=17), cache_dir=cache_dir, canary_every=0)
    other.measure(model, inputs_for(), RuntimeOptions())
    other.measure(model, {"input": np.ones((8, 64), np.float32)}, RuntimeOptions())  # batch size
    other.measure(matmul_model(tmp_path / "m2.onnx", seed=5), inputs_for(), RuntimeOptions())  # artifact
    assert second.stats["measured"] == 1 and other.stats["measured"] == 3 and other.stats["cache_hits"] == 0

    forced = Measurer(OrtCpuDevice(), QUICK, cache_dir=cache_dir, remeasure=True, canary_every=0)
    m3 = forced.measure(model, inputs_for(), RuntimeOptions())
    assert not m3.cached and forced.stats["measured"] == 1 and forced.stats["cache_hits"] == 0


def test_cache_key_and_atomic_store(tmp_path: Path) -> None:
    fp = OrtCpuDevice().fingerprint()
    k1, parts = cache_key("a" * 64, "ort-cpu", fp, RuntimeOptions(), QUICK, inputs_for())
    k2, _ = cache_key("a" * 64, "ort-cpu", fp, RuntimeOptions(), QUICK, inputs_for())
    k3, _ = cache_key(
        "a" * 64, "ort-cpu", {**fp, "onnxruntime": "0.0"}, RuntimeOptions(), QUICK, inputs_for()
    )
    assert k1 == k2 != k3
    cache = MeasurementCache(tmp_path / "c")
    assert cache.get(k1) is None
    cache.put(k1, parts, Measurement(status="ok", backend="ort-cpu", n=1, median_ms=1.0, samples_ms=[1.0]))
    assert cache.get(k1).cached and len(cache) == 1  # type: ignore[union-attr]
    assert not list((tmp_path / "c").glob("*.tmp"))  # no partial files left behind
    cache.path(k3).write_text("{truncated")
    assert cache.get(k3) is None  # a corrupt entry is a miss, not a crash


# -- canary and drift -----------------------------------------------------------------------
def test_canary_model_is_fixed_and_valid(tmp_path: Path) -> None:
    assert canary_proto().SerializeToString() == canary_proto().SerializeToString()
    path = write_canary(tmp_path)
    m = OrtCpuDevice().measure(path, canary_inputs(), RuntimeOptions(), QUICK)
    assert m.usable


def test_canary_runs_at_start_and_every_n_jobs_and_reference_persists(tmp_path: Path, model: Path) -> None:
    cache_dir = tmp_path / "measurements"
    measurer = Measurer(OrtCpuDevice(), QUICK, cache_dir=cache_dir, remeasure=True, canary_every=2)
    results = [measurer.measure(model, inputs_for(), RuntimeOptions()) for _ in range(3)]
    stats = measurer.stats
    assert stats["measured"] == 3
    # the start, then after every 2 measured jobs, plus one right after any unstable job
    assert 2 <= stats["canary_runs"] <= 2 + stats["unstable"]
    for m in results:
        assert m.drift_ratio is not None and m.drift_ratio > 0
        assert m.extra["canary"]["reference_ms"] > 0 and m.extra["canary"]["jobs_since"] <= 2
    if results[0].status == "ok":
        assert results[0].drift_ratio == 1.0  # measured against the reference it just took
    reference = results[0].extra["canary"]["reference_ms"]
    # a resumed study compares against the study's own start, stored beside the cache
    assert (cache_dir / "canary.json").is_file()
    resumed = Measurer(OrtCpuDevice(), QUICK, cache_dir=cache_dir, remeasure=True, canary_every=2)
    m = resumed.measure(model, inputs_for(), RuntimeOptions())
    assert m.extra["canary"]["reference_ms"] == reference


def test_cpu_burner_is_flagged_as_unstable_or_drift(tmp_path: Path, model: Path) -> None:
    measurer = Measurer(OrtCpuDevice(), LOADED, cache_dir=tmp_path / "measurements", canary_every=1)
    before = measurer.measure(model, inputs_for(), RuntimeOptions())
    assert before.drift_ratio is not None  # the reference canary was measured first
    burners = start_burners(2 * (os.cpu_count() or 1))
    try:
        time.sleep(0.3)
        loaded = [
            measurer.measure(
                matmul_model(tmp_path / f"m{i}.onnx", seed=i + 1), inputs_for(), RuntimeOptions()
            )
            for i in range(3)
        ]
    finally:
        stop(burners)
    flagged = [m for m in loaded if m.status == "unstable" or m.drift_flag]
    assert flagged, [(m.status, m.drift_ratio, m.iqr_ms / m.median_ms) for m in loaded]
    loads = [m.host_load for m in loaded]  # the load is on record
    assert all(load is not None and load.foreign_cpu > 0.3 for load in loads)
    assert all(m.host_busy and m.host_load and m.host_busy >= m.host_load.foreign_cpu for m in loaded)
    stats = measurer.stats
    assert stats["unstable"] + stats["drift_flagged"] >= 1 and stats["max_drift"] >= 1.0
    assert stats["host_busy"] == 3 + bool(before.host_busy)


def test_study_twice_measures_nothing_the_second_time(tmp_path: Path) -> None:
    import autotune

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_tasks import conv_task

    kw = dict(
        budget="50ms",
        trials=3,
        study_name="twice",
        out_dir=tmp_path / "runs",
        protocol=QUICK,
        progress=False,
        report=False,
    )
    first = autotune.search(conv_task(), **kw)
    stats1 = first.meta.measurer
    # the unmodified model is measured first as the reference; the fp32 baseline trial reuses it
    assert stats1["measured"] == 3 and stats1["cache_hits"] == 1 and stats1["canary_runs"] >= 1
    # same study again (fresh storage, same run directory): every latency comes from the cache
    second = autotune.search(conv_task(), storage=f"sqlite:///{tmp_path / 'again.db'}", **kw)
    stats2 = second.meta.measurer
    assert stats2["measured"] == 0 and stats2["canary_runs"] == 0 and stats2["cache_hits"] == 4
    assert all(t.measurement.cached for t in second.trials)
    assert {t.latency_ms for t in second.trials} == {t.latency_ms for t in first.trials}
    text = second.summary()
    assert "cache_hits 4" in text and "measurement cache" in text


def test_drift_flags_show_in_trial_attributes_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU burner starts halfway through a study: the affected trials say so."""
    import autotune
    import autotune.measure

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_tasks import conv_task

    monkeypatch.setattr(autotune.measure, "DEFAULT_CANARY_EVERY", 1)
    task = conv_task()
    inner = task.evaluate
    burners: list[subprocess.Popen[bytes]] = []

    def evaluate(runner: autotune.Runner) -> float:
        if not burners and evaluate.calls >= 2:  # type: ignore[attr-defined]
            burners.extend(start_burners(2 * (os.cpu_count() or 1)))
            time.sleep(0.3)
        evaluate.calls += 1  # type: ignore[attr-defined]
        return inner(runner)

    evaluate.calls = 0  # type: ignore[attr-defined]
    task.evaluate = evaluate
    try:
        result = autotune.search(
            task,
            budget="50ms",
            trials=5,
            out_dir=tmp_path / "runs",
            protocol=LOADED,
            progress=False,
            report=False,
        )
    finally:
        stop(burners)
    later = [t for t in result.trials if t.number >= 2]  # measured with the burners running
    # which signal fires depends on the host: the canary's median moves only where time slices
    # land inside its sub-ms runs, but the load itself is always on record
    flagged = [
        t.number
        for t in later
        if t.measurement.status == "unstable" or t.measurement.drift_flag or t.measurement.host_busy
    ]
    assert flagged, [(t.number, t.measurement.status, t.measurement.host_load) for t in later]
    trial = result.study.trials[flagged[0]]
    attrs = trial.user_attrs["measurement"]
    extra = attrs["extra"]
    assert attrs["status"] == "unstable" or extra.get("drift_flag") or extra.get("host_busy")
    assert attrs["drift_ratio"] is not None and extra["canary"]["reference_ms"] > 0
    text = result.summary()
    assert "unstable latency" in text or "device drift" in text or "host busy" in text


# -- commands -----------------------------------------------------------------------------
def test_measure_command_prints_like_trtexec(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["measure", str(model), "--device", "cpu", "--threads", "1", "--quick"]) == 0
    out = capsys.readouterr().out
    for text in (
        "=== Performance summary ===",
        "Latency: min =",
        "median =",
        "percentile(99%)",
        "Throughput:",
        "Phases: load",
        "Stability:" if "UNSTABLE" not in out else "UNSTABLE",
    ):
        assert text in out
    assert cli.main(["measure", str(model), "--quick", "--json", "--shape", "input=2x64"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["status"] in ("ok", "unstable") and d["n"] >= QUICK.min_samples and d["median_ms"] > 0
    assert d["runtime"]["threads"] == 1 and d["fingerprint"]["backend"] == "ort-cpu"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["measure", "missing.onnx"], "no such file"),
        (["measure", "{model}", "--device", "nope"], "unknown device"),
        (["measure", "{model}", "--device", "tensorrt-gpu"], "not usable here"),
        (["measure", "{bad}"], "not an ONNX model"),
        (["measure", "{model}", "--shape", "input=2xq"], "--shape"),
        (["measure", "{model}", "--threads", "0"], "--threads"),
    ],
)
def test_measure_command_bad_input_is_one_line_exit_2(
    argv: list[str], message: str, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    argv = [a.format(model=model, bad=bad) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_devices_command_lists_profiles_and_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert "yes" in lines["cpu"].split()
    for name in ("cuda", "tensorrt-gpu"):
        ok, why = BACKENDS[{"cuda": "ort-cuda", "tensorrt-gpu": "tensorrt"}[name]].available()
        assert ("yes" if ok else "no") in lines[name].split()
        if not ok:
            assert why[:30] in lines[name]
    assert cli.main(["devices", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cpu"]["usable"] and rows["cpu"]["capabilities"]["bits"] == [32, 8, 4]
