"""The Device interface and what a backend can do.

A Device measures the latency of one ONNX artifact under explicit runtime options, following
the protocol in :mod:`autotune.devices._protocol`. Results are typed records with a status,
never sentinel numbers.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from autotune.records import Measurement, Protocol, RuntimeOptions, Status

if TYPE_CHECKING:
    from autotune.space import DeviceProfile  # a later stage: the type only

__all__ = ["Capabilities", "Device", "Measurement", "Protocol", "Reference", "RuntimeOptions", "Status"]


@dataclass(frozen=True, eq=False)
class Reference:
    """The artifact a candidate is timed against, interleaved (paired timing).

    The study's unmodified model, or the device canary for a bare ``autotune measure``.
    """

    path: Path
    inputs: dict[str, np.ndarray]
    sha256: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What a backend measures, and which knob values it makes real (i.e. faster or smaller).

    ``autotune devices`` prints this and checks device profiles against it: a profile that
    lists a knob value its backend does not make real wastes trials.
    """

    measures: str  # what the reported latency is, in one line
    bits: tuple[int, ...] = (32,)
    sparsity: tuple[float | str, ...] = (0.0,)
    precisions: tuple[str, ...] = ("fp32",)  # RuntimeOptions.precision values honoured
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Device(abc.ABC):
    """A place where latency is measured. One file per backend implements this.

    A backend times load and first run itself and hands one inference (``run()``) to
    :func:`autotune.devices._protocol.run_protocol`, inside :func:`autotune.devices._lock.device_lock`;
    a remote agent calls the same ``measure`` in a job subprocess on the device.

    Example::

        from pathlib import Path
        import numpy as np
        from autotune.devices import OrtCpuDevice, Protocol, RuntimeOptions

        m = OrtCpuDevice().measure(Path("model.onnx"), {"input": np.zeros((1, 3), np.float32)},
                                   RuntimeOptions(threads=1), Protocol())
        print(m.status, m.median_ms)
    """

    #: backend id used in device profiles ("ort-cpu", "tensorrt", "remote", ...)
    backend: str = ""
    #: what this backend measures and which knob values are real on it
    capabilities: ClassVar[Capabilities] = Capabilities(measures="latency")
    #: whether :meth:`measure_paired` times a candidate interleaved with a reference
    supports_paired: ClassVar[bool] = False
    #: measures on this host, under :attr:`lock_name`'s cross-process lock; False for a remote
    #: device, whose agent queues the jobs of every client itself
    measures_locally: ClassVar[bool] = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether this backend can run here, and why not. Never raises, never needs a GPU."""
        return True, ""

    @classmethod
    def from_profile(cls, profile: DeviceProfile, agent: str | None = None) -> Device:
        """Build from a device profile (its ``options``); the default takes no options.

        Backends with options (GPU index, engine cache, agent URLs) override this.
        """
        return cls()

    @property
    def lock_name(self) -> str:
        """Measurements that share this name never run at the same time (one per device)."""
        return self.backend

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the hardware and software stack (part of the cache key)."""

    @abc.abstractmethod
    def measure(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        """Measure ``model_path`` fed with ``inputs``. Failures come back as a status."""

    def measure_paired(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        reference: Reference,
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        """Measure ``model_path`` in alternating blocks with ``reference``, in one session.

        The result carries ``ratio``, ``ratio_ci`` and ``reference_median_ms`` besides the
        candidate's statistics (:mod:`autotune.devices._paired`). Backends that cannot time
        pairs leave :attr:`supports_paired` False and the measurement stage pairs two separate
        measurements instead.
        """
        raise NotImplementedError(f"{self.backend} does not time pairs")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (sessions, connections)."""
