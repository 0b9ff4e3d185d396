"""Paired (reference-relative) latency: the protocol with a fake clock, ort-cpu with real sessions,
``measure --reference``, and the measurement stage's reference bookkeeping.

No assertion depends on how fast this machine is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_measurement import FakeClock, inputs_for, matmul_model

from autotune.devices import Measurement, OrtCpuDevice, Protocol, Reference, RuntimeOptions
from autotune.devices._paired import median_ci, run_paired

QUICK = Protocol.quick()


@pytest.fixture(autouse=True)
def private_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_LOCK_DIR", str(tmp_path / "locks"))


def drifting_pair(clock: FakeClock, a_ms: float, b_ms: float, speed) -> tuple:
    """Two fake runs whose cost is scaled by the host's speed at the current (fake) time."""

    def run() -> None:
        clock.t += a_ms * speed(clock.t) / 1e3

    def ref() -> None:
        clock.t += b_ms * speed(clock.t) / 1e3

    return run, ref


# -- pure functions -------------------------------------------------------------------------
def test_median_ci_is_the_order_statistic_interval() -> None:
    values = np.arange(1.0, 101.0)  # n = 100: ranks 40 and 61 (1-based)
    med, low, high = median_ci(values)
    assert (med, low, high) == (50.5, 40.0, 61.0)
    assert median_ci([3.0]) == (3.0, 3.0, 3.0)
    assert all(np.isnan(median_ci([])))


def test_paired_ratio_cancels_a_host_that_changes_speed() -> None:
    """The host runs 1x, then 3x slower for 0.3 s, and so on: absolute times swing, the ratio not."""
    clock = FakeClock()
    run, ref = drifting_pair(clock, 2.0, 4.0, lambda t: 3.0 if int(t / 0.3) % 2 else 1.0)
    p = Protocol(
        warmup_s=0.05, warmup_runs=3, min_samples=64, max_retries=0, pair_block_ms=10.0, pair_min_time_s=1
    )
    m = run_paired(run, ref, p, "fake", clock=clock)
    assert m.status == "ok" and m.n >= 64 and m.paired
    assert m.ratio == pytest.approx(0.5)
    assert m.ratio_ci[0] <= m.ratio <= m.ratio_ci[1] and m.ratio_resolution < 0.05
    assert m.extra["block_runs"] == [5, 3]  # ~10 ms blocks: 5 x 2 ms and 3 x 4 ms
    # the absolute numbers are the candidate's and the reference's, in the same window
    assert m.min_ms == pytest.approx(2.0) and max(m.samples_ms) == pytest.approx(6.0)
    assert m.reference_median_ms is not None and m.reference_median_ms >= 4.0
    assert m.reference_stats is not None and m.reference_stats.min_ms == pytest.approx(4.0)


def test_paired_ratio_from_the_threads_cpu_time_leaves_preemption_out() -> None:
    """Other processes steal random wall time from blocks; the thread's CPU time does not see it."""
    wall, cpu = FakeClock(), FakeClock()
    rng = np.random.default_rng(3)

    def timed(ms: float):
        def run() -> None:
            cpu.t += ms / 1e3
            wall.t += ms / 1e3 * (1 + float(rng.choice([0.0, 0.0, 2.0])))  # preempted 1 run in 3

        return run

    p = Protocol(warmup_s=0.0, warmup_runs=2, min_samples=64, pair_min_time_s=0.0)
    m = run_paired(timed(1.0), timed(2.0), p, "fake", clock=wall, cpu_time=cpu)
    assert m.ratio == pytest.approx(0.5) and m.ratio_resolution == pytest.approx(0.0)
    assert "clean by thread CPU time" in m.extra["ratio_clock"] and m.status == "ok"
    # preempted blocks are left out: the absolute statistics are the clean blocks' wall times
    assert m.extra["clean_pairs"] == m.n < m.extra["pairs"]
    assert m.min_ms == m.p90_ms == pytest.approx(1.0)


def test_paired_ratio_is_taken_from_the_quiet_pairs() -> None:
    """A process on a sibling core slows both models without preempting them, int8 less than
    FP32: the ratio moves with the load (0.5 quiet, 0.41 loaded). The quiet pairs keep 0.5."""
    clock = FakeClock()

    def load(t: float) -> bool:
        return int(t / 0.3) % 4 != 0  # loaded 3/4 of the time

    run, ref = drifting_pair(clock, 1.0, 2.0, lambda t: 1.3 if load(t) else 1.0)
    slower = drifting_pair(clock, 0.0, 2.0, lambda t: 0.3 if load(t) else 0.0)[1]  # FP32: x1.6

    def ref_loaded() -> None:
        ref()
        slower()

    p = Protocol(warmup_s=0.0, warmup_runs=2, min_samples=64, pair_min_time_s=1.0)
    m = run_paired(run, ref_loaded, p, "fake", clock=clock)
    assert m.ratio == pytest.approx(0.5) and m.status == "ok"
    assert m.extra["quiet_pairs"] < m.extra["pairs"] / 2  # the loaded pairs are left out
    assert m.median_ms == pytest.approx(1.3)  # the absolute figures keep the loaded pairs


def test_paired_blocks_alternate_so_a_trend_does_not_bias_the_ratio() -> None:
    """A host slowing down steadily: A-then-B in every pair would read A faster than it is."""
    clock = FakeClock()
    run, ref = drifting_pair(clock, 1.0, 1.0, lambda t: 1.0 + t)
    p = Protocol(warmup_s=0.0, warmup_runs=2, min_samples=64, pair_min_time_s=0.0, max_retries=0)
    m = run_paired(run, ref, p, "fake", clock=clock)
    assert m.ratio == pytest.approx(1.0, abs=0.002)
    assert m.ratio_ci[0] < 1.0 < m.ratio_ci[1]


def shifting_share(clock: FakeClock, share: Callable[[int], float]) -> tuple:
    """Candidate and reference whose i-th runs (one pair) take share(i) and 4 - share(i) ms:
    every pair takes 4 ms, so no pair is quieter than another."""
    calls = {"a": 0, "b": 0}

    def run() -> None:
        calls["a"] += 1
        clock.t += share(calls["a"]) / 1e3

    def ref() -> None:
        calls["b"] += 1
        clock.t += (4.0 - share(calls["b"])) / 1e3

    return run, ref


def test_paired_rounds_are_pooled_until_the_ratio_is_resolved() -> None:
    """Noisy early pairs, steady later ones: a second round of pairs resolves the ratio."""
    clock = FakeClock()
    # warm-up and the first round: 1 or 3 ms against 3 or 1 ms; then 2 against 2
    run, ref = shifting_share(clock, lambda i: (1.0 if i % 3 else 3.0) if i <= 40 else 2.0)
    p = Protocol(warmup_s=0.0, warmup_runs=2, min_samples=32, pair_min_time_s=0.0)
    m = run_paired(run, ref, p, "fake", clock=clock)
    assert m.status == "ok" and m.retries >= 1 and m.n == 32 * (m.retries + 1)
    assert m.extra["resolution_rounds"][0] > p.ratio_resolution >= m.extra["resolution_rounds"][-1]
    assert m.ratio == pytest.approx(1.0)


def test_paired_ratio_noise_is_retried_then_flagged_unstable() -> None:
    clock = FakeClock()
    noise = np.random.default_rng(0).choice([1.0, 3.0], size=1000)
    run, ref = shifting_share(clock, lambda i: float(noise[i]))
    p = Protocol(warmup_s=0.0, min_samples=32, pair_min_time_s=0.0)
    m = run_paired(run, ref, p, "fake", clock=clock)
    assert m.status == "unstable" and m.retries == 2 and m.usable
    assert m.n == 3 * 32  # every round's pairs are pooled
    assert len(m.extra["resolution_rounds"]) == 3 and "95% interval" in (m.unstable_reason or "")


def test_paired_measurement_round_trips_through_json() -> None:
    clock = FakeClock()
    run, ref = drifting_pair(clock, 1.0, 2.0, lambda t: 1.0)
    m = run_paired(run, ref, QUICK, "fake", clock=clock)
    m.reference_sha256 = "ab" * 32
    again = Measurement.from_dict(json.loads(json.dumps(m.to_dict(max_samples=8))))
    assert again.ratio == m.ratio == pytest.approx(0.5) and again.ratio_ci == m.ratio_ci
    assert again.reference_sha256 == m.reference_sha256
    assert again.reference_median_ms == m.reference_median_ms
    assert "x0.500" in again.summary()


# -- ort-cpu, real sessions -------------------------------------------------------------------
def test_ort_cpu_times_a_candidate_against_a_reference(tmp_path: Path) -> None:
    small = matmul_model(tmp_path / "small.onnx", dim=32)
    big = matmul_model(tmp_path / "big.onnx", dim=256)
    inputs_small, inputs_big = inputs_for(32), inputs_for(256)
    dev = OrtCpuDevice()
    m = dev.measure_paired(small, inputs_small, Reference(big, inputs_big, "f" * 64), RuntimeOptions(), QUICK)
    assert m.usable and m.paired and m.reference_sha256 == "f" * 64
    assert 0 < m.ratio < 1  # a 32-wide MatMul is cheaper than a 256-wide one on any CPU
    assert m.ratio_ci[0] <= m.ratio <= m.ratio_ci[1]
    assert m.median_ms > 0 and m.reference_median_ms > m.median_ms
    assert m.load_ms > 0 and m.first_run_ms > 0 and m.runtime["threads"] == 1
    assert m.fingerprint["backend"] == "ort-cpu" and m.host_load is not None
    # the reference itself against itself: a ratio of one, inside its interval
    same = dev.measure_paired(big, inputs_big, Reference(big, inputs_big), RuntimeOptions(), QUICK)
    assert same.ratio_ci[0] <= 1.0 <= same.ratio_ci[1] or abs(same.ratio - 1) < 0.05


def test_ort_cpu_paired_failures_are_results(tmp_path: Path) -> None:
    good = matmul_model(tmp_path / "good.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    dev = OrtCpuDevice()
    m = dev.measure_paired(bad, inputs_for(), Reference(good, inputs_for()), RuntimeOptions(), QUICK)
    assert m.status == "invalid_model"
    m = dev.measure_paired(good, inputs_for(), Reference(bad, inputs_for()), RuntimeOptions(), QUICK)
    assert m.status == "build_error" and "the reference bad.onnx does not load" in m.error
    m = dev.measure_paired(good, inputs_for(), Reference(good, {}), RuntimeOptions(), QUICK)
    assert m.status == "runtime_error" and "no value for model input" in m.error


# -- autotune measure --reference -------------------------------------------------------------
def test_measure_command_reference_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autotune import cli

    model = matmul_model(tmp_path / "m.onnx", dim=32)
    ref = matmul_model(tmp_path / "ref.onnx", dim=128)
    assert cli.main(["measure", str(model), "--quick", "--reference", str(ref), "--json"]) in (0, 1)
    d = json.loads(capsys.readouterr().out)
    assert {"ratio", "ratio_ci", "median_ms", "reference_median_ms"} <= set(d)
    low, high = d["ratio_ci"]
    assert low <= d["ratio"] <= high and d["median_ms"] > 0 and d["reference_median_ms"] > 0
    assert d["reference"] == str(ref) and len(d["reference_sha256"]) == 64
    assert cli.main(["measure", str(model), "--quick"]) in (0, 1)  # default: the device canary
    out = capsys.readouterr().out
    assert "Reference: canary" in out and "Ratio to the reference:" in out and "95% interval" in out
    assert cli.main(["measure", str(model), "--quick", "--reference", "none", "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["ratio"] is None
    assert cli.main(["measure", str(model), "--reference", str(tmp_path / "nope.onnx")]) == 2
    assert "--reference" in capsys.readouterr().err


# -- the measurement stage ----------------------------------------------------------------------
class SeparateOnly(OrtCpuDevice):
    """A backend that cannot time pairs (like a remote agent before protocol support)."""

    supports_paired = False


def test_measurer_pairs_every_candidate_and_keys_the_cache_on_the_reference(tmp_path: Path) -> None:
    from autotune.measure import Measurer

    cand = matmul_model(tmp_path / "c.onnx", dim=32)
    ref_a = matmul_model(tmp_path / "a.onnx", dim=128, seed=1)
    ref_b = matmul_model(tmp_path / "b.onnx", dim=128, seed=2)
    x = inputs_for(32)
    cache = tmp_path / "cache"
    ma = Measurer(
        OrtCpuDevice(), QUICK, cache_dir=cache, canary_every=0, reference=Reference(ref_a, inputs_for(128))
    )
    m = ma.measure(cand, x, RuntimeOptions())
    assert m.paired and m.reference_sha256 == ma.reference.sha256 and not m.cached
    # study latency = reference estimate (median of window medians) x ratio
    est = ma.reference_latency[next(iter(ma.reference_latency))]
    assert est.windows == [m.reference_median_ms]
    assert ma.latency_ms(m, RuntimeOptions()) == pytest.approx(m.reference_median_ms * m.ratio)
    assert ma.measure(cand, x, RuntimeOptions()).cached  # same reference: a hit ...
    mb = Measurer(
        OrtCpuDevice(), QUICK, cache_dir=cache, canary_every=0, reference=Reference(ref_b, inputs_for(128))
    )
    assert not mb.measure(cand, x, RuntimeOptions()).cached  # ... another reference: measured again
    assert ma.stats["reference"]["windows"] == 2 and ma.stats["reference"]["estimator"]
    # every later window is re-checked against the estimate
    assert ma.measure(cand, x, RuntimeOptions()).extra["reference_window"]["vs_estimate"] > 0
    # a longer protocol (the confirmation round) is another measurement too
    assert not ma.measure(cand, x, RuntimeOptions(), protocol=LONGER).cached


LONGER = Protocol(warmup_s=0.05, warmup_runs=3, min_samples=24, min_time_s=0.1, max_retries=0)


def test_measurer_pairs_separate_measurements_on_a_backend_without_pairs(tmp_path: Path) -> None:
    from autotune.measure import Measurer

    cand = matmul_model(tmp_path / "c.onnx", dim=32)
    ref = matmul_model(tmp_path / "r.onnx", dim=128)
    measurer = Measurer(SeparateOnly(), QUICK, canary_every=0, reference=Reference(ref, inputs_for(128)))
    m = measurer.measure(cand, inputs_for(32), RuntimeOptions())
    assert (
        m.usable and m.interleaved is False and m.ratio == pytest.approx(m.median_ms / m.reference_median_ms)
    )
    assert m.ratio_ci[0] <= m.ratio <= m.ratio_ci[1]


def test_reference_latency_is_the_median_of_window_medians() -> None:
    from autotune.measure._reference import ReferenceLatency

    ref = ReferenceLatency()
    for v in (1.0, 1.1, 3.0, None, float("nan"), 0.9, 1.05):  # one busy window, two unusable
        ref.add(v)
    assert ref.estimate_ms == pytest.approx(1.05) and len(ref.windows) == 5
    assert ref.spread == pytest.approx(3.0 / 0.9 - 1)


# -- the study ----------------------------------------------------------------------------------
def test_study_times_every_candidate_against_the_unmodified_model(tmp_path: Path) -> None:
    from tiny_tasks import conv_task

    import autotune

    result = autotune.search(
        conv_task(), budget="50ms", trials=3, out_dir=tmp_path, protocol=QUICK, progress=False, report=False
    )
    fp32 = result.baselines["fp32"].measurement
    refs = {t.measurement.reference_sha256 for t in result.trials}
    assert refs == {result.baselines["fp32"].sha256}  # the reference is the unmodified artifact
    assert fp32.ratio_ci[0] <= 1.0 <= fp32.ratio_ci[1] or abs(fp32.ratio - 1.0) < 0.1  # itself
    # study latency = reference latency (the median of the window medians so far) x ratio: the
    # implied reference latency of every trial lies among the reference's window medians
    windows = [t.measurement.reference_median_ms for t in result.trials]
    for t in result.trials:
        assert t.measurement.paired
        assert min(windows) * 0.999 <= t.latency_ms / t.measurement.ratio <= max(windows) * 1.001


# -- decisions on noisy latencies -------------------------------------------------------------
def test_noise_aware_dominance_and_best() -> None:
    from autotune.measure.confirm import Figure, best, dominates, equally_fast, pareto

    a = Figure(1, accuracy=95.0, latency_ms=1.00, size_bytes=100, resolution=0.02)
    b = Figure(2, accuracy=95.0, latency_ms=1.03, size_bytes=80, resolution=0.02)  # inside: equal
    c = Figure(3, accuracy=95.0, latency_ms=1.20, size_bytes=70, resolution=0.02)  # clearly slower
    d = Figure(4, accuracy=90.0, latency_ms=0.50, size_bytes=60, resolution=0.02)
    assert equally_fast(a, b) and not equally_fast(a, c)
    # a is 3% faster than b, but inside their resolution: b is smaller, so b dominates a
    assert dominates(b, a) and not dominates(a, b)
    assert not dominates(b, c) and not dominates(c, b)  # c: slower but smaller
    assert [f.key for f in pareto([a, b, c, d])] == [4, 2, 3]
    assert best([a, b, c, d]).key == 2  # most accurate; a and b equally fast; b smaller
    # without noise (resolution 0) the faster one wins as before
    a0, b0 = replace(a, resolution=0.0), replace(b, resolution=0.0)
    assert best([a0, b0]).key == 1 and not dominates(b0, a0)


def test_confirmation_targets_borderline_and_protocol() -> None:
    from autotune.budget import Limit
    from autotune.measure.confirm import Figure, borderline, confirmation_protocol, to_confirm

    front = [Figure(k, 90.0, ms, 1.0, 0.03) for k, ms in ((1, 0.5), (2, 0.88), (3, 1.1))]
    assert to_confirm(front, front[0], Limit(1.0)) == [1, 2, 3]  # best + within 15% of budget
    assert to_confirm(front, None, Limit(2.0)) == []
    assert borderline(Figure(5, 90.0, 0.98, 1.0, 0.03), Limit(1.0))  # [0.951, 1.009] straddles 1.0
    assert not borderline(Figure(6, 90.0, 0.90, 1.0, 0.03), Limit(1.0))
    p = confirmation_protocol(Protocol())
    assert p.min_samples == 192 and p.min_time_s == 3.0 and p.ratio_resolution == 0.01
    assert p.pair_min_time_s == 9.0 and p.max_time_s == 36.0


def test_relative_budget_is_decided_on_the_ratio_alone() -> None:
    from autotune.budget import Limit, parse_budget_spec
    from autotune.measure.confirm import Figure, best, borderline, to_confirm, within

    # budget resolved once at 50% of a 1.0 ms reference; the host then slowed down: the study's
    # reference estimate is 1.2 ms, so a candidate at ratio 0.48 derives 0.576 ms > 0.5 ms
    limit = parse_budget_spec("50%").limit(0.5)
    assert limit == Limit(0.5, 0.5)
    assert limit.within(0.576, 0.48) and limit.excess(0.576, 0.48) < 0
    assert not limit.within(0.45, 0.52) and limit.excess(0.45, 0.52) > 0  # fast window, ratio over
    assert limit.within(0.45, None)  # unpaired: on the latency
    absolute = parse_budget_spec("0.5ms").limit(0.5)
    assert not absolute.within(0.576, 0.48) and absolute.within(0.45, 0.52)
    # borderline follows the ratio's interval, not the latency's
    f = Figure(1, 90.0, 0.60, 1.0, 0.02, ratio=0.495, ratio_ci=(0.485, 0.505))
    assert within(f, limit) and borderline(f, limit) and not borderline(f, absolute)
    g = Figure(2, 91.0, 0.45, 1.0, 0.02, ratio=0.52, ratio_ci=(0.51, 0.53))
    h = Figure(3, 89.0, 0.62, 1.0, 0.02, ratio=0.40, ratio_ci=(0.39, 0.41))
    assert best([x for x in (f, g, h) if within(x, limit)]).key == 1  # g is over 50% on its ratio
    assert to_confirm([h, f], h, limit) == [3, 1]  # f within 15% of 0.5 on its ratio, h not


# -- a loopback agent: the job names the reference by sha256 -------------------------------------
AGENT_TOKEN = "latency-test-token-0123456789abcdef"


def test_paired_timing_through_a_loopback_agent(tmp_path: Path) -> None:
    import base64

    import httpx

    from autotune.agent.process import AgentProcess
    from autotune.devices.remote import RemoteDevice

    cand = matmul_model(tmp_path / "c.onnx", dim=32)
    ref = matmul_model(tmp_path / "r.onnx", dim=256)
    env = {"AUTOTUNE_AGENT_TEST_HOOKS": "1"}
    with AgentProcess(token=AGENT_TOKEN, root=tmp_path / "agent", env=env) as agent:
        device = RemoteDevice([agent.url], token=AGENT_TOKEN)
        try:
            m = device.measure_paired(
                cand, inputs_for(32), Reference(ref, inputs_for(256)), RuntimeOptions(), QUICK
            )
            assert m.usable and m.paired and 0 < m.ratio < 1, m.error
            assert m.ratio_ci[0] <= m.ratio <= m.ratio_ci[1] and m.reference_median_ms > 0
            assert m.reference_sha256 == sha256_of(ref) and m.extra["agent"]["url"] == agent.url
            # the reference is uploaded once, then named by its sha256
            again = device.measure_paired(
                cand, inputs_for(32), Reference(ref, inputs_for(256)), RuntimeOptions(), QUICK
            )
            assert again.paired and device.agents[0].stats["upload_skipped"] >= 0
            # the agent's job subprocess times several fresh sessions too, and the wire keeps them
            several = replace(
                QUICK, sessions=3, max_sessions=3, session_pair_time_s=0.05, session_warmup_s=0.02
            )
            m = device.measure_paired(
                cand, inputs_for(32), Reference(ref, inputs_for(256)), RuntimeOptions(), several
            )
            assert m.usable and len(m.session_ratios or []) == 3 and m.ratio_ci_within is not None, m.error
            stored = {p.stem for p in (agent.root / "models").glob("*.onnx")}
            assert stored == {sha256_of(cand), sha256_of(ref)}
        finally:
            device.close()
        # coalescing: identical paired jobs share one; the unpaired job and a job against
        # another reference are other jobs
        x = inputs_for(32)["input"]
        body = {
            "model_sha256": sha256_of(cand),
            "backend": "ort-cpu",
            "protocol": QUICK.to_dict(),
            "inputs": [{"name": "input", "dtype": "float32", "shape": list(x.shape),
                        "data": base64.b64encode(x.tobytes()).decode()}],
        }  # fmt: skip
        y = inputs_for(256)["input"]
        ref_inputs = [{"name": "input", "dtype": "float32", "shape": list(y.shape),
                       "data": base64.b64encode(y.tobytes()).decode()}]  # fmt: skip
        paired = {**body, "reference_sha256": sha256_of(ref), "reference_inputs": ref_inputs}
        with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {AGENT_TOKEN}"}) as c:
            blocker = c.post("/v1/jobs", json={**body, "test": {"sleep_s": 1.0}}).json()
            first = c.post("/v1/jobs", json=paired).json()
            second = c.post("/v1/jobs", json=paired).json()
            alone = c.post("/v1/jobs", json=body).json()
            self_ref = c.post("/v1/jobs", json={**body, "reference_sha256": sha256_of(cand)}).json()
            assert second["coalesced"] and second["job_id"] == first["job_id"]
            assert len({first["job_id"], alone["job_id"], self_ref["job_id"], blocker["job_id"]}) == 4
            missing = c.post("/v1/jobs", json={**body, "reference_sha256": "0" * 64})
            assert missing.status_code == 409 and "0" * 64 in missing.text
            for job in (blocker, first, alone, self_ref):
                deadline = time.monotonic() + 60
                while (view := c.get(f"/v1/jobs/{job['job_id']}", params={"wait": 5}).json())["status"] in (
                    "queued",
                    "running",
                ):
                    assert time.monotonic() < deadline
            assert view["measurement"]["ratio"] is not None  # the self-referenced job: paired


def sha256_of(path: Path) -> str:
    from autotune._util import sha256_file

    return sha256_file(path)


def test_search_ends_with_a_confirmation_round(tmp_path: Path) -> None:
    from tiny_tasks import conv_task

    import autotune

    result = autotune.search(
        conv_task(), budget="50ms", trials=3, out_dir=tmp_path, protocol=QUICK, progress=False, report=False
    )
    assert result.best is not None and result.best.number in result.confirmed  # the best is confirmed
    c = result.confirmed[result.best.number]
    assert c["ratio_ci"][0] <= c["ratio"] <= c["ratio_ci"][1] and c["latency_ms"] > 0
    assert c["borderline"] is False  # 50 ms is far above a tiny conv's latency
    assert "confirmed with a longer interleaved protocol" in result.summary()
    # the stored round survives a reload
    again = autotune.ParetoSet.load(tmp_path / result.study.study_name)
    assert again.confirmed == result.confirmed and again.best.number == result.best.number
