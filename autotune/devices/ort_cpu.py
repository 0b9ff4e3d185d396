"""onnxruntime on the local CPU, with an explicit thread count."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from autotune.devices._base import Device, Measurement, Protocol, RuntimeOptions
from autotune.devices._fingerprint import host_fingerprint, host_state
from autotune.devices._lock import device_lock
from autotune.devices._protocol import run_protocol

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


def timed_session(
    model_path: Path,
    inputs: dict[str, np.ndarray],
    so: ort.SessionOptions,
    providers: list[Any],
    backend: str,
    protocol: Protocol,
) -> Measurement:
    """Load a session, time the first run, then run the protocol (shared by ORT backends)."""
    t0 = time.perf_counter()
    try:
        session = ort.InferenceSession(str(model_path), so, providers=providers)
    except Exception as exc:  # noqa: BLE001 - any load failure is a result, not a crash
        kind = "invalid_model" if "INVALID" in str(exc).upper() else "build_error"
        return Measurement(status=kind, backend=backend, error=str(exc).splitlines()[0])
    load_ms = (time.perf_counter() - t0) * 1e3
    feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
    try:
        t0 = time.perf_counter()
        session.run(None, feeds)
        first_run_ms = (time.perf_counter() - t0) * 1e3
        m = run_protocol(lambda: session.run(None, feeds), protocol, backend)
    except Exception as exc:  # noqa: BLE001
        return Measurement(status="runtime_error", backend=backend, error=str(exc).splitlines()[0])
    m.load_ms, m.first_run_ms = load_ms, first_run_ms
    return m


class OrtCpuDevice(Device):
    """Local CPU through onnxruntime's CPUExecutionProvider."""

    backend = "ort-cpu"

    def fingerprint(self) -> dict[str, Any]:
        return {**host_fingerprint(), "backend": self.backend, "onnxruntime": ort.__version__}

    def measure(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        with device_lock(self.backend):
            previous = os.sched_getaffinity(0) if runtime.affinity else None
            if runtime.affinity:
                os.sched_setaffinity(0, runtime.affinity)
            try:
                m = timed_session(
                    model_path,
                    inputs,
                    session_options(runtime),
                    ["CPUExecutionProvider"],
                    self.backend,
                    protocol,
                )
            finally:
                if previous is not None:
                    os.sched_setaffinity(0, previous)
        m.runtime = runtime.to_dict()
        m.fingerprint = self.fingerprint()
        m.extra["host_state"] = host_state()
        return m
