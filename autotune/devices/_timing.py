"""Timing helpers every backend shares: the first run, then the protocol; failures as results.

Backend-neutral (no runtime imported): the CPU and GPU backends all call these around their own
``run()`` (one inference), next to :mod:`autotune.devices._protocol`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from autotune._util import error_line
from autotune.devices._base import Measurement, Protocol, Status
from autotune.devices._protocol import Timer, run_protocol
from autotune.devices._sessions import SessionPair, run_sessions


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


def timed_sessions(
    open_pair: Callable[[], SessionPair],
    protocol: Protocol,
    backend: str,
    timer: Timer | None = None,
    cpu_time: Callable[[], float] | None = None,
) -> Measurement:
    """Paired timing (:mod:`autotune.devices._paired`) over ``protocol.sessions`` or more
    fresh pairs of sessions (:func:`autotune.devices._sessions.run_sessions`).

    ``open_pair()`` creates the candidate's and the reference's sessions anew; the caller
    loads the first pair itself beforehand (so a load failure has its own status) and hands
    it out first. The first run of the first session is timed (``first_run_ms``).
    """
    first: list[float] = []

    def opened() -> SessionPair:
        run, reference_run, close = open_pair()
        try:
            t0 = time.perf_counter()
            run()
            if not first:
                first.append((time.perf_counter() - t0) * 1e3)
            try:
                reference_run()
            except Exception as exc:
                raise RuntimeError(f"the reference failed: {error_line(exc, with_type=False)}") from exc
        except BaseException:
            close()
            raise
        return run, reference_run, close

    try:
        m = run_sessions(opened, protocol, backend, timer=timer, cpu_time=cpu_time)
    except Exception as exc:  # noqa: BLE001 - any runtime failure is a result, not a crash
        return run_failure(exc, backend)
    m.first_run_ms = first[0] if first else m.first_run_ms
    return m
