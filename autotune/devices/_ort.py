"""onnxruntime session helpers shared by the CPU and GPU execution-provider backends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from autotune._util import error_line
from autotune.devices._base import Measurement, Protocol, Reference, RuntimeOptions
from autotune.devices._sessions import SessionPair
from autotune.devices._timing import load_failure, timed_run, timed_sessions

_GRAPH_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(runtime: RuntimeOptions) -> ort.SessionOptions:
    """Explicit threads: ORT's default (all cores, spinning) is what makes CPU numbers noisy.

    Every session option a deployment must reproduce comes from ``runtime`` (exported with the
    winner: result.TrialResult.export)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = runtime.threads
    if runtime.execution_mode == "parallel":
        # independent branches run concurrently in an inter-op pool as large as the intra-op one
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        so.inter_op_num_threads = runtime.threads
    else:
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
    so.graph_optimization_level = _GRAPH_OPT[runtime.graph_optimization]
    so.log_severity_level = 3
    return so


def in_calling_thread(runtime: RuntimeOptions) -> bool:
    """ORT computes in the calling thread: one intra-op thread, sequential execution."""
    return runtime.threads == 1 and runtime.execution_mode == "sequential"


def load_session(
    model_path: Path, so: ort.SessionOptions, providers: list[Any]
) -> tuple[ort.InferenceSession, float]:
    """Create a session; returns it with its load time (ms)."""
    t0 = time.perf_counter()
    session = ort.InferenceSession(str(model_path), so, providers=providers)
    return session, (time.perf_counter() - t0) * 1e3


def feeds_for(session: ort.InferenceSession, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The session's inputs from ``inputs``; a missing one is a clear error."""
    missing = [i.name for i in session.get_inputs() if i.name not in inputs]
    if missing:
        raise KeyError(f"no value for model input(s) {missing} (given: {sorted(inputs)})")
    return {i.name: inputs[i.name] for i in session.get_inputs()}


def timed_session(
    model_path: Path,
    inputs: dict[str, np.ndarray],
    so: ort.SessionOptions,
    providers: list[Any],
    backend: str,
    protocol: Protocol,
    cpu_time: Callable[[], float] | None = None,
) -> Measurement:
    """Load a session, time the first run, then run the protocol (shared by ORT backends).

    ``cpu_time``: the calling thread's CPU clock when the session computes in that thread
    (one intra-op thread), so the protocol can see preemption.
    """
    try:
        session, load_ms = load_session(model_path, so, providers)
    except Exception as exc:  # noqa: BLE001 - any load failure is a result, not a crash
        return load_failure(exc, backend)
    try:
        feeds = feeds_for(session, inputs)
    except KeyError as exc:
        return Measurement(status="runtime_error", backend=backend, error=str(exc.args[0]))
    m = timed_run(lambda: session.run(None, feeds), protocol, backend, cpu_time=cpu_time)
    m.load_ms = load_ms
    m.extra["providers"] = session.get_providers()
    return m


def timed_session_pair(
    model_path: Path,
    inputs: dict[str, np.ndarray],
    reference: Reference,
    so: ort.SessionOptions,
    providers: list[Any],
    backend: str,
    protocol: Protocol,
    cpu_time: Callable[[], float] | None = None,
) -> Measurement:
    """Load the candidate's and the reference's sessions and time them interleaved, in
    ``protocol.sessions`` or more pairs of fresh sessions (:mod:`autotune.devices._sessions`).

    ``cpu_time``: the calling thread's CPU clock when the sessions compute in that thread.
    """
    try:
        session, load_ms = load_session(model_path, so, providers)
    except Exception as exc:  # noqa: BLE001 - any load failure is a result, not a crash
        return load_failure(exc, backend)
    try:
        ref_session, _ = load_session(reference.path, so, providers)
    except Exception as exc:  # noqa: BLE001
        return Measurement(
            status="build_error",
            backend=backend,
            error=f"the reference {reference.path.name} does not load: {error_line(exc, with_type=False)}",
        )
    try:
        feeds = feeds_for(session, inputs)
        ref_feeds = feeds_for(ref_session, reference.inputs)
    except KeyError as exc:
        return Measurement(status="runtime_error", backend=backend, error=str(exc.args[0]))
    loaded = [(session, ref_session)]
    created = {"sessions": 1}

    def open_pair() -> SessionPair:
        # the first pair is the one loaded above; every further one is created anew, both sides
        if loaded:
            a, b = loaded.pop()
        else:
            a, _ = load_session(model_path, so, providers)
            b, _ = load_session(reference.path, so, providers)
            created["sessions"] += 1
        return lambda: a.run(None, feeds), lambda: b.run(None, ref_feeds), lambda: None

    m = timed_sessions(open_pair, protocol, backend, cpu_time=cpu_time)
    m.load_ms = load_ms
    m.reference_sha256 = reference.sha256 or None
    m.extra["providers"] = session.get_providers()
    m.extra["session_pairs"] = created["sessions"]
    return m
