"""Devices: where latency is measured. One module per backend behind one interface.

Importing this package never needs CUDA, TensorRT or torch: GPU backends import their runtime
inside their methods, and ``available()`` says why one cannot run here.

Example::

    >>> from autotune.devices import BACKENDS
    >>> ok, why = BACKENDS["tensorrt"].available()
"""

from __future__ import annotations

import importlib
from typing import Any

from autotune.devices._base import Capabilities, Device, Measurement, Protocol, RuntimeOptions, Status
from autotune.devices.ort_cpu import OrtCpuDevice
from autotune.devices.ort_gpu import OrtCudaDevice, OrtTensorrtDevice
from autotune.devices.tensorrt_engine import TensorrtDevice
from autotune.devices.torch_cuda import TorchCudaDevice

#: backend id -> Device class. A new backend is one new module registered here.
BACKENDS: dict[str, type[Device]] = {
    cls.backend: cls
    for cls in (OrtCpuDevice, OrtCudaDevice, OrtTensorrtDevice, TorchCudaDevice, TensorrtDevice)
}

# The remote client needs httpx, which an agent-only install (`autotune[agent]`) lacks.
_OPTIONAL = {"remote": ("autotune.devices.remote", "RemoteDevice")}
for _backend, (_module, _name) in _OPTIONAL.items():
    try:
        BACKENDS[_backend] = getattr(importlib.import_module(_module), _name)
    except (ImportError, AttributeError):
        pass


def device_for_profile(profile: Any, agent: str | None = None) -> Device:
    """Instantiate the backend a device profile names, or raise UserError saying why not.

    Uses the backend's ``from_profile(profile, agent=...)`` when it has one (GPU options,
    agent URLs), else its no-argument constructor.
    """
    from autotune.errors import UserError

    if agent is not None and profile.backend != "remote":
        raise UserError(
            f"--agent {agent}: device {profile.name!r} is local ({profile.backend}); "
            "use a remote profile such as jetson"
        )
    cls = BACKENDS.get(profile.backend)
    if cls is None:
        raise UserError(
            f"device {profile.name!r}: unknown backend {profile.backend!r} (known: {', '.join(BACKENDS)})"
        )
    ok, why = cls.available()
    if not ok:
        raise UserError(f"device {profile.name!r}: backend {profile.backend} is not usable here: {why}")
    factory = getattr(cls, "from_profile", None)
    return factory(profile, agent=agent) if factory else cls()


__all__ = [
    "BACKENDS",
    "Capabilities",
    "Device",
    "Measurement",
    "OrtCpuDevice",
    "OrtCudaDevice",
    "OrtTensorrtDevice",
    "Protocol",
    "RuntimeOptions",
    "Status",
    "TensorrtDevice",
    "TorchCudaDevice",
    "device_for_profile",
]
