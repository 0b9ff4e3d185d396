"""Devices: where latency is measured. One module per backend behind one interface."""

from __future__ import annotations

from autotune.devices._base import Device, Measurement, Protocol, RuntimeOptions, Status
from autotune.devices.ort_cpu import OrtCpuDevice

#: backend id -> Device class. A new backend is one new module registered here.
BACKENDS: dict[str, type[Device]] = {
    OrtCpuDevice.backend: OrtCpuDevice,
}

__all__ = ["BACKENDS", "Device", "Measurement", "OrtCpuDevice", "Protocol", "RuntimeOptions", "Status"]
