"""Paired timing over several sessions: the estimator's logic on synthetic sessions (no timed
assertions), and that the measurement paths really create several sessions."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_measurement import inputs_for, matmul_model

from autotune.devices import Measurement, OrtCpuDevice, Protocol, Reference, RuntimeOptions
from autotune.devices._sessions import run_sessions, session_interval, session_protocol, t975
from autotune.measure.confirm import confirmation_protocol

#: several short sessions (the real protocol's structure at test speed)
SESSIONS = replace(
    Protocol.quick(), sessions=3, max_sessions=5, session_pair_time_s=0.05, session_warmup_s=0.02
)


@pytest.fixture(autouse=True)
def private_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_LOCK_DIR", str(tmp_path / "locks"))


def within_ci(r: float, half: float) -> list[float]:
    return [r * (1 - half), r * (1 + half)]


def test_the_session_interval_covers_a_session_effect_the_within_session_one_misses() -> None:
    """Synthetic per-session medians: true ratio 0.2, each session off by a lognormal session
    effect (sd 5%), each session's own interval +-0.4% around its own median."""
    rng = np.random.default_rng(0)
    true, trials, s = 0.2, 2000, 4
    covered_sessions = covered_within = 0
    for _ in range(trials):
        ratios = true * np.exp(rng.normal(0.0, 0.05, s))
        within = [within_ci(float(r), 0.004) for r in ratios]
        _, lo, hi = session_interval(ratios.tolist(), within)
        covered_sessions += lo <= true <= hi
        covered_within += within[0][0] <= true <= within[0][1]
    assert covered_sessions / trials >= 0.93  # a 95% interval, with S-1 = 3 degrees of freedom
    assert covered_within / trials < 0.15  # one session's interval says +-0.4%, the truth is 5% away


def test_the_session_interval_is_never_narrower_than_the_sessions_own_intervals() -> None:
    # three sessions that agree to the digit by chance: the interval keeps the within-session noise
    est, lo, hi = session_interval([0.5, 0.5, 0.5], [within_ci(0.5, 0.03)] * 3)
    assert est == pytest.approx(0.5)
    assert (hi - lo) / 2 / est == pytest.approx(0.03 / math.sqrt(3), rel=0.05)
    # one session: its own interval, unchanged
    assert session_interval([0.3], [[0.29, 0.31]]) == (0.3, 0.29, 0.31)
    assert math.isnan(session_interval([])[0])
    assert t975(2) == pytest.approx(4.303) and t975(100) == 1.96


def fake_session(ratio: float, half: float = 0.002) -> Measurement:
    return Measurement(
        status="ok",
        backend="fake",
        n=3,
        median_ms=ratio,
        samples_ms=[ratio] * 3,
        ratio=ratio,
        ratio_ci=within_ci(ratio, half),
        reference_median_ms=1.0,
        extra={"pairs": 10, "clean_pairs": 9, "quiet_pairs": 8},
    )


class Sessions:
    """A fake ``open_pair`` and ``measure``: each opened pair reads the next ratio of a list."""

    def __init__(self, ratios: list[float]) -> None:
        self.ratios = ratios
        self.opened = self.closed = 0
        self.protocols: list[Protocol] = []

    def open_pair(self) -> Any:
        self.opened += 1

        def close() -> None:
            self.closed += 1

        return (lambda: None), (lambda: None), close

    def measure(self, run: Any, ref: Any, protocol: Protocol, backend: str, **_: Any) -> Measurement:
        self.protocols.append(protocol)
        return fake_session(self.ratios[self.opened - 1])


def test_sessions_are_added_until_the_interval_is_narrow_enough() -> None:
    p = replace(Protocol(), sessions=3, max_sessions=6, session_resolution=0.02)
    steady = Sessions([0.200, 0.201, 0.199, 0.5, 0.5, 0.5])
    m = run_sessions(steady.open_pair, p, "fake", measure=steady.measure)
    assert steady.opened == steady.closed == 3  # narrow after the minimum: stop there
    assert m.status == "ok" and m.session_ratios == [0.2, 0.201, 0.199]
    assert m.ratio == pytest.approx(0.2, rel=1e-3) and m.ratio_ci[0] < 0.2 < m.ratio_ci[1]
    assert m.ratio_ci_within == pytest.approx(within_ci(0.2, 0.002))
    assert m.n == 9 and [d["pairs"] for d in m.extra["per_session"]] == [10, 10, 10]
    # each session runs the short per-session protocol, no pooled rounds
    assert all(q == session_protocol(p) and q.max_retries == 0 for q in steady.protocols)
    assert steady.protocols[0].pair_min_time_s == p.session_pair_time_s

    wild = Sessions([0.20, 0.24, 0.18, 0.22, 0.19, 0.23])
    m = run_sessions(wild.open_pair, p, "fake", measure=wild.measure)
    assert wild.opened == 6  # up to max_sessions, then flagged
    assert m.status == "unstable" and "6 sessions" in (m.unstable_reason or "")
    assert m.ratio_ci[0] < m.ratio < m.ratio_ci[1]


def test_one_session_is_the_single_session_protocol() -> None:
    one = Sessions([0.3])
    p = replace(Protocol(), sessions=1)
    m = run_sessions(one.open_pair, p, "fake", measure=one.measure)
    assert one.opened == one.closed == 1 and one.protocols == [p]
    assert m.session_ratios is None and m.ratio == 0.3


def test_the_confirmation_round_times_more_sessions() -> None:
    p = confirmation_protocol(Protocol())
    assert p.sessions == 2 * Protocol().sessions and p.max_sessions == 2 * Protocol().max_sessions
    assert p.session_resolution == Protocol().session_resolution / 2


def test_ort_cpu_creates_a_fresh_pair_of_sessions_per_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autotune.devices._ort as ort_helpers

    created: list[str] = []
    real = ort_helpers.load_session

    def counting(path: Path, so: Any, providers: Any) -> Any:
        created.append(Path(path).name)
        return real(path, so, providers)

    monkeypatch.setattr(ort_helpers, "load_session", counting)
    small = matmul_model(tmp_path / "small.onnx", dim=32)
    big = matmul_model(tmp_path / "big.onnx", dim=128)
    p = replace(SESSIONS, session_resolution=1e-9)  # never narrow enough: all max_sessions
    m = OrtCpuDevice().measure_paired(
        small, inputs_for(32), Reference(big, inputs_for(128)), RuntimeOptions(), p
    )
    assert m.usable and m.paired, m.error
    assert created == ["small.onnx", "big.onnx"] * p.max_sessions
    assert m.extra["session_pairs"] == p.max_sessions and len(m.session_ratios or []) == p.max_sessions
    assert m.ratio_ci[0] <= m.ratio <= m.ratio_ci[1] and m.ratio_ci_within is not None
    # the stored form keeps the per-session figures, and reads back
    back = Measurement.from_dict(m.to_dict())
    assert back.session_ratios == m.session_ratios and back.ratio_ci_within == m.ratio_ci_within


def test_a_failing_reference_in_a_later_session_is_a_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autotune.devices._ort as ort_helpers

    calls = {"n": 0}
    real = ort_helpers.load_session

    def flaky(path: Path, so: Any, providers: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("out of file handles")
        return real(path, so, providers)

    monkeypatch.setattr(ort_helpers, "load_session", flaky)
    a = matmul_model(tmp_path / "a.onnx", dim=32)
    m = OrtCpuDevice().measure_paired(
        a, inputs_for(32), Reference(a, inputs_for(32)), RuntimeOptions(), SESSIONS
    )
    assert m.status == "runtime_error" and "out of file handles" in (m.error or "")


def test_old_protocols_and_measurements_still_load() -> None:
    old = {k: v for k, v in Protocol().to_dict().items() if "session" not in k}
    assert Protocol.from_dict(old).sessions == Protocol().sessions
    stored = fake_session(0.4).to_dict()
    assert "session_ratios" not in stored["extra"]
    assert Measurement.from_dict(stored).session_ratios is None


def test_gpu_backends_prepare_a_fresh_engine_per_session(tmp_path: Path) -> None:
    """CudaDevice (engines, CUDA graphs) re-prepares both sides per session; runs without a GPU."""
    from contextlib import contextmanager

    from autotune.devices._gpu import CudaDevice, Prepared

    prepared: list[str] = []
    alive: list[str] = []

    class FakeGpu(CudaDevice):
        backend = "fake-gpu"

        @contextmanager
        def prepared(self, model_path: Path, inputs: Any, runtime: Any) -> Any:
            n = 40_000 if model_path.name == "big.onnx" else 500
            prepared.append(model_path.name)
            alive.append(model_path.name)
            yield Prepared(run=lambda: sum(range(n)), load_ms=1.0)
            alive.remove(model_path.name)  # released after its session

    p = replace(SESSIONS, session_resolution=1e-9)
    m = FakeGpu().measure_paired(
        tmp_path / "small.onnx", {}, Reference(tmp_path / "big.onnx", {}), RuntimeOptions(), p
    )
    assert m.usable and m.ratio < 1 and len(m.session_ratios or []) == p.max_sessions
    assert prepared == ["small.onnx", "big.onnx"] * p.max_sessions and alive == []
