"""Measurement stage: artifact + device + runtime options -> Measurement."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autotune.devices import Device, Measurement, Protocol, RuntimeOptions


class Measurer:
    """Measures artifacts on one device under one protocol."""

    def __init__(self, device: Device, protocol: Protocol) -> None:
        self.device = device
        self.protocol = protocol

    def measure(self, model_path: Path, inputs: dict[str, np.ndarray], runtime: RuntimeOptions) -> Measurement:
        return self.device.measure(model_path, inputs, runtime, self.protocol)
