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

from autotune.devices._base import Capabilities, Device, Measurement, Protocol, Reference, RuntimeOptions
from autotune.devices._fingerprint import HostLoad, host_fingerprint, host_state
from autotune.devices._lock import device_lock
from autotune.devices._ort import in_calling_thread, session_options, timed_session, timed_session_pair
from autotune.records import LoadShares


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
    supports_paired = True
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
        cpu = ["CPUExecutionProvider"]
        return self._timed(
            runtime,
            lambda so, clock: timed_session(model_path, inputs, so, cpu, self.backend, protocol, clock),
        )

    def measure_paired(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        reference: Reference,
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        cpu = ["CPUExecutionProvider"]
        return self._timed(
            runtime,
            lambda so, clock: timed_session_pair(
                model_path, inputs, reference, so, cpu, self.backend, protocol, clock
            ),
        )

    def _timed(
        self,
        runtime: RuntimeOptions,
        timed: Callable[[ort.SessionOptions, Callable[[], float] | None], Measurement],
    ) -> Measurement:
        """``timed(session options, CPU clock)`` on the host. With one thread ORT computes in this
        thread, so its CPU clock shows preemption (and the paired ratio leaves it out)."""
        so = session_options(runtime)
        clock = time.thread_time if in_calling_thread(runtime) else None
        return self._on_host(runtime, lambda: timed(so, clock))

    def _on_host(self, runtime: RuntimeOptions, measure: Callable[[], Measurement]) -> Measurement:
        """Run ``measure`` holding the CPU lock, pinned, watching the host's load."""
        with device_lock(self.lock_name) as waited_s, pinned(runtime.affinity), HostLoad() as load:
            start = time.time()
            state = host_state()
            m = measure()
            held = [start, time.time()]  # wall clock, inside the lock: no two spans overlap
        m.runtime = runtime.to_dict()
        m.fingerprint = self.fingerprint()
        m.host_load = LoadShares.from_dict(load.to_dict())
        m.extra.update(host_state=state, lock_wait_s=round(waited_s, 3), measured_at=held)
        return m
