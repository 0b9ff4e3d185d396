"""What every backend measuring on one CUDA GPU shares: its lock, its fingerprint, and how its
results are stamped. The backends differ only in what runs the model."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autotune._util import cache_root, error_line
from autotune.devices import _cuda
from autotune.devices._base import Device, Measurement, Protocol, Reference, RuntimeOptions
from autotune.devices._fingerprint import host_fingerprint
from autotune.devices._lock import device_lock
from autotune.devices._onnx_info import OnnxTraits, analyse
from autotune.devices._protocol import Timer
from autotune.devices._sessions import SessionPair
from autotune.devices._timing import timed_run, timed_sessions


def default_cache_dir() -> Path:
    """Engine and timing caches (see :func:`autotune._util.cache_root`)."""
    return cache_root()


@dataclass
class Prepared:
    """A model ready to run on the GPU: one inference, how to time it, what to add afterwards."""

    run: Callable[[], object]
    load_ms: float
    timer: Timer | None = None  # None: wall clock around synchronous runs
    first_run_ms: float | None = None  # when preparing already ran (and timed) the first run
    finish: Callable[[Measurement], None] = lambda m: None  # extras after the steady state
    extra: dict[str, Any] = field(default_factory=dict)  # stamped on the result
    provider_options: dict[str, str] | None = None  # the execution provider's, as measured
    cuda_graph: str | None = None  # torch-cuda: "captured", "disabled", or why not


class CudaDevice(Device):
    """A backend on one CUDA GPU. Subclasses implement :meth:`prepared`; measuring (alone or
    paired with a reference, both models resident at once) is shared here."""

    device_id: int = 0
    supports_paired = True

    def prepared(
        self, model_path: Path, inputs: dict[str, np.ndarray], runtime: RuntimeOptions
    ) -> AbstractContextManager[Prepared | Measurement]:
        """Load ``model_path`` and yield it ready to run (or a failure), releasing it after."""
        raise NotImplementedError

    def measure(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        with device_lock(self.lock_name) as waited_s, self.prepared(model_path, inputs, runtime) as p:
            if isinstance(p, Measurement):
                return self.stamp(p, runtime, waited_s)
            m = timed_run(p.run, protocol, self.backend, timer=p.timer)
            self._finish(p, m)
        return self.stamp(m, runtime, waited_s, **p.extra)

    def measure_paired(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        reference: Reference,
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        with device_lock(self.lock_name) as waited_s, ExitStack() as first:
            p = first.enter_context(self.prepared(model_path, inputs, runtime))
            if isinstance(p, Measurement):
                return self.stamp(p, runtime, waited_s)
            r = first.enter_context(self.prepared(reference.path, reference.inputs, runtime))
            if isinstance(r, Measurement):
                failed = Measurement(
                    status="build_error",
                    backend=self.backend,
                    error=f"the reference {reference.path.name} does not load: {r.status}: {r.error}",
                )
                return self.stamp(failed, runtime, waited_s)
            pending: list[tuple[Prepared, Prepared, ExitStack]] = [(p, r, first.pop_all())]

            def open_pair() -> SessionPair:
                # engines, CUDA graphs and sessions are per-session too: every pair after the
                # first is prepared anew, both sides (docs/measurement.md, "Sessions")
                if pending:
                    a, b, stack = pending.pop()
                else:
                    stack = ExitStack()
                    a_or = stack.enter_context(self.prepared(model_path, inputs, runtime))
                    b_or = stack.enter_context(self.prepared(reference.path, reference.inputs, runtime))
                    for got in (a_or, b_or):
                        if isinstance(got, Measurement):
                            stack.close()
                            raise RuntimeError(f"a fresh session did not load: {got.status}: {got.error}")
                    assert isinstance(a_or, Prepared) and isinstance(b_or, Prepared)
                    a, b = a_or, b_or
                return a.run, b.run, stack.close

            m = timed_sessions(open_pair, protocol, self.backend, timer=p.timer)
            self._finish(p, m)
            m.reference_sha256 = reference.sha256 or None
        return self.stamp(m, runtime, waited_s, **p.extra)

    @staticmethod
    def _finish(p: Prepared, m: Measurement) -> None:
        m.load_ms = p.load_ms
        m.provider_options, m.cuda_graph = p.provider_options, p.cuda_graph
        if p.first_run_ms is not None:
            m.first_run_ms = p.first_run_ms
        if m.usable:
            p.finish(m)

    @property
    def lock_name(self) -> str:
        return f"cuda{self.device_id}"

    def runtime_versions(self) -> dict[str, Any]:
        """Versions of what runs the model (part of the fingerprint)."""
        return {}

    def fingerprint(self) -> dict[str, Any]:
        return {
            **host_fingerprint(),
            **_cuda.gpu_info(self.device_id),
            "backend": self.backend,
            **self.runtime_versions(),
        }

    def inspect(self, model_path: Path) -> OnnxTraits | Measurement:
        """The artifact's traits (precisions, QDQ, 2:4 weights), or ``invalid_model``."""
        try:
            return analyse(model_path)
        except Exception as exc:  # noqa: BLE001 - an unreadable model is a result
            return Measurement(
                status="invalid_model", backend=self.backend, error=error_line(exc, with_type=False)
            )

    def stamp(self, m: Measurement, runtime: RuntimeOptions, lock_wait_s: float, **extra: Any) -> Measurement:
        """Attach runtime options, fingerprint and GPU state to a finished measurement."""
        m.runtime = runtime.to_dict()
        m.fingerprint = self.fingerprint()
        m.extra.update(gpu_state=_cuda.gpu_state(self.device_id), lock_wait_s=round(lock_wait_s, 3), **extra)
        return m
