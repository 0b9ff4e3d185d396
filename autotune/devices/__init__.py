"""Devices: where latency is measured. One module per backend behind one interface.

Importing this package loads no backend: :data:`BACKENDS` maps a backend id to
``"module:Class"`` and imports the module on first use, so ``import autotune.devices`` (and
:mod:`autotune.records`) never loads onnxruntime, CUDA, TensorRT or torch. GPU backends import
their runtime inside their methods, and ``available()`` says why one cannot run here.

Example::

    >>> from autotune.devices import BACKENDS
    >>> ok, why = BACKENDS["tensorrt"].available()
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from autotune.devices._base import (
    Capabilities,
    Device,
    Measurement,
    Protocol,
    Reference,
    RuntimeOptions,
    Status,
)
from autotune.devices._fingerprint import host_fingerprint
from autotune.devices._lock import TIMEOUT_ENV as LOCK_TIMEOUT_ENV
from autotune.devices._lock import DeviceBusy, device_lock
from autotune.devices._paired import median_ci

if TYPE_CHECKING:  # the public names, for type checkers (resolved lazily at run time)
    from autotune.devices._ort import session_options
    from autotune.devices._ort_graph import INT8_KERNELS, optimized_graph, quantized_kernels, runs_in
    from autotune.devices.ort_cpu import OrtCpuDevice
    from autotune.devices.ort_gpu import OrtCudaDevice, OrtTensorrtDevice
    from autotune.devices.tensorrt_engine import TensorrtDevice
    from autotune.devices.torch_cuda import TorchCudaDevice
    from autotune.space import DeviceProfile  # a later stage: the type only

#: backend id -> "module:Class". A new backend is one new module registered here.
_REGISTRY: dict[str, str] = {
    "ort-cpu": "autotune.devices.ort_cpu:OrtCpuDevice",
    "ort-cuda": "autotune.devices.ort_gpu:OrtCudaDevice",
    "ort-tensorrt": "autotune.devices.ort_gpu:OrtTensorrtDevice",
    "torch-cuda": "autotune.devices.torch_cuda:TorchCudaDevice",
    "tensorrt": "autotune.devices.tensorrt_engine:TensorrtDevice",
    "remote": "autotune.devices.remote:RemoteDevice",
}
# The remote client needs httpx, which an agent-only install (the `agent` extra) lacks: without
# it the backend is not registered at all (as before the registry was lazy).
_NEEDS: dict[str, str] = {"remote": "httpx"}


class _Backends(Mapping[str, "type[Device]"]):
    """Backend id -> Device class, imported on first access."""

    def __init__(self) -> None:
        self._loaded: dict[str, type[Device]] = {}

    def _present(self, name: str) -> bool:
        need = _NEEDS.get(name)
        return name in _REGISTRY and (need is None or importlib.util.find_spec(need) is not None)

    def __getitem__(self, name: str) -> type[Device]:
        if name not in self._loaded:
            if not self._present(name):
                raise KeyError(name)
            module, cls = _REGISTRY[name].split(":")
            self._loaded[name] = getattr(importlib.import_module(module), cls)
        return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._present(name)

    def __iter__(self) -> Iterator[str]:
        return (name for name in _REGISTRY if self._present(name))

    def __len__(self) -> int:
        return sum(1 for _ in self)


#: backend id -> Device class (lazy: the module is imported when a class is looked up)
BACKENDS: Mapping[str, type[Device]] = _Backends()

#: public class names -> backend id, resolved lazily by ``__getattr__``
_CLASSES = {spec.split(":")[1]: name for name, spec in _REGISTRY.items() if name != "remote"}


#: what autotune.devices._ort_graph offers, resolved lazily by ``__getattr__``
_ORT_GRAPH = ("INT8_KERNELS", "optimized_graph", "quantized_kernels", "runs_in")


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return BACKENDS[_CLASSES[name]]
    if name == "session_options":  # onnxruntime's session options; loads onnxruntime
        from autotune.devices._ort import session_options

        return session_options
    if name in _ORT_GRAPH:  # the graph onnxruntime's CPU provider runs; loads onnx
        from autotune.devices import _ort_graph

        return getattr(_ort_graph, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def device_for_profile(profile: DeviceProfile, agent: str | None = None) -> Device:
    """Instantiate the backend a device profile names, or raise UserError saying why not."""
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
    return cls.from_profile(profile, agent=agent)


__all__ = [
    "BACKENDS",
    "INT8_KERNELS",
    "LOCK_TIMEOUT_ENV",
    "Capabilities",
    "Device",
    "DeviceBusy",
    "Measurement",
    "OrtCpuDevice",
    "OrtCudaDevice",
    "OrtTensorrtDevice",
    "Protocol",
    "Reference",
    "RuntimeOptions",
    "Status",
    "TensorrtDevice",
    "TorchCudaDevice",
    "device_for_profile",
    "device_lock",
    "host_fingerprint",
    "median_ci",
    "optimized_graph",
    "quantized_kernels",
    "runs_in",
    "session_options",
]
