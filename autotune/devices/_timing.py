"""Timing helpers every backend shares: the first run, then the protocol; failures as results.

Backend-neutral (no runtime imported): the CPU and GPU backends all call these around their own
``run()`` (one inference), next to :mod:`autotune.devices._protocol`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from autotune._util import error_line
from autotune.devices._base import Measurement, Protocol, Status
from autotune.devices._paired import run_paired
from autotune.devices._protocol import Timer, run_protocol


def load_failure(exc: BaseException, backend: str) -> Measurement:
    """A session/engine that cannot be created is a result with a status, not a crash."""
    text = str(exc).upper()
    kind: Status
    if "OUT OF MEMORY" in text or "OUT_OF_MEMORY" in text or isinstance(exc, MemoryError):
        kind = "oom"
    elif "INVALID_PROTOBUF" in text or "INVALID_GRAPH" in text or "NO_SUCHFILE" in text:
        kind = "invalid_model"
    else:
        kind = "build_error"
    return Measurement(status=kind, backend=backend, error=error_line(exc, with_type=False))


def run_failure(exc: BaseException, backend: str) -> Measurement:
    """A run that raised is a result with a status (``oom`` or ``runtime_error``), not a crash."""
    oom = "OUT OF MEMORY" in str(exc).upper() or isinstance(exc, MemoryError)
    kind: Status = "oom" if oom else "runtime_error"
    return Measurement(status=kind, backend=backend, error=error_line(exc, with_type=False))


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
        return run_failure(exc, backend)
    m.first_run_ms = first_run_ms
    return m


def timed_pair(
    run: Callable[[], object],
    reference_run: Callable[[], object],
    protocol: Protocol,
    backend: str,
    timer: Timer | None = None,
    cpu_time: Callable[[], float] | None = None,
) -> Measurement:
    """Time both first runs, then the paired protocol; a failing run is a ``runtime_error``."""
    try:
        t0 = time.perf_counter()
        run()
        first_run_ms = (time.perf_counter() - t0) * 1e3
        try:
            reference_run()
        except Exception as exc:
            raise RuntimeError(f"the reference failed: {error_line(exc, with_type=False)}") from exc
        m = run_paired(run, reference_run, protocol, backend, timer=timer, cpu_time=cpu_time)
    except Exception as exc:  # noqa: BLE001 - any runtime failure is a result, not a crash
        return run_failure(exc, backend)
    m.first_run_ms = first_run_ms
    return m
