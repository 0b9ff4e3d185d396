"""onnxruntime on the local CPU, with an explicit thread count and optional CPU affinity."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from autotune._util import error_line
from autotune.devices._base import Capabilities, Device, Measurement, Protocol, RuntimeOptions
from autotune.devices._fingerprint import HostLoad, host_fingerprint, host_state
from autotune.devices._lock import device_lock
from autotune.devices._protocol import Timer, run_protocol

_GRAPH_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(runtime: RuntimeOptions) -> ort.SessionOptions:
    """Explicit threads: ORT's default (all cores, spinning) is what makes CPU numbers noisy."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = runtime.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _GRAPH_OPT[runtime.graph_optimization]
    so.log_severity_level = 3
    return so


def load_failure(exc: BaseException, backend: str) -> Measurement:
    """A session/engine that cannot be created is a result with a status, not a crash."""
    text = str(exc).upper()
    if "OUT OF MEMORY" in text or "OUT_OF_MEMORY" in text or isinstance(exc, MemoryError):
        kind = "oom"
    elif "INVALID_PROTOBUF" in text or "INVALID_GRAPH" in text or "NO_SUCHFILE" in text:
        kind = "invalid_model"
    else:
        kind = "build_error"
    return Measurement(status=kind, backend=backend, error=error_line(exc, with_type=False))


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


def timed_run(
    run: Callable[[], object],
    protocol: Protocol,
    backend: str,
    timer: Timer | None = None,
    cpu_time: Callable[[], float] | None = None,
) -> Measurement:
    """Time the first run, then run the protocol; a failing run is a ``runtime_error`` result."""
    try:
        t0 = time.perf_counter()
        run()
        first_run_ms = (time.perf_counter() - t0) * 1e3
        m = run_protocol(run, protocol, backend, timer=timer, cpu_time=cpu_time)
    except Exception as exc:  # noqa: BLE001 - any runtime failure is a result, not a crash
        kind = (
            "oom" if "OUT OF MEMORY" in str(exc).upper() or isinstance(exc, MemoryError) else "runtime_error"
        )
        return Measurement(status=kind, backend=backend, error=error_line(exc, with_type=False))
    m.first_run_ms = first_run_ms
    return m


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


@contextmanager
def pinned(affinity: tuple[int, ...] | None) -> Iterator[None]:
    """Pin the calling thread (and the threads it starts, e.g. ORT's pool) to ``affinity``."""
    if not affinity:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, affinity)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


class OrtCpuDevice(Device):
    """Local CPU through onnxruntime's CPUExecutionProvider.

    The lock is the host's CPU ("cpu"), so two local CPU measurements never overlap.
    """

    backend = "ort-cpu"
    capabilities = Capabilities(
        measures="host wall-clock latency of InferenceSession.run (inputs and outputs in host memory)",
        bits=(32, 8, 4),
        sparsity=(0.0,),
        precisions=("fp32",),
        notes=(
            "int8: QDQ -> QLinearConv / MatMulInteger kernels",
            "int4: MatMulNBits, weight-only, MatMul nodes only",
            "sparsity: zeros are multiplied as dense weights (no latency change)",
            "fp16: emulated, usually slower than fp32 on CPUs",
        ),
    )

    @property
    def lock_name(self) -> str:
        return "cpu"

    def fingerprint(self) -> dict[str, Any]:
        return {
            **host_fingerprint(),
            "backend": self.backend,
            "onnxruntime": ort.__version__,
            "ort_build": ort.get_build_info() if hasattr(ort, "get_build_info") else None,
            "execution_providers": ort.get_available_providers(),
        }

    def measure(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        with device_lock(self.lock_name) as waited_s, pinned(runtime.affinity), HostLoad() as load:
            state = host_state()
            m = timed_session(
                model_path,
                inputs,
                session_options(runtime),
                ["CPUExecutionProvider"],
                self.backend,
                protocol,
                # one thread: ORT computes in this thread, so its CPU clock shows preemption
                cpu_time=time.thread_time if runtime.threads == 1 else None,
            )
        m.runtime = runtime.to_dict()
        m.fingerprint = self.fingerprint()
        m.extra.update(host_state=state, host_load=load.to_dict(), lock_wait_s=round(waited_s, 3))
        return m
