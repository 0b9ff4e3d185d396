"""Measurement stage: artifact + device + runtime options -> Measurement.

The Measurer is the one place that decides whether to measure: it will consult the
measurement cache and re-measure a canary for drift (see the measurement issue).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from autotune.devices import Device, Measurement, Protocol, RuntimeOptions


class Measurer:
    """Measures artifacts on one device under one protocol.

    Args:
        device: where to measure.
        protocol: how long and how often.
        cache_dir: where measurements persist (beside the study), or None for no cache.
        remeasure: ignore cached measurements.
    """

    def __init__(
        self,
        device: Device,
        protocol: Protocol,
        cache_dir: Path | None = None,
        remeasure: bool = False,
    ) -> None:
        self.device = device
        self.protocol = protocol
        self.cache_dir = cache_dir
        self.remeasure = remeasure
        #: counters shown in the summary: measured, cache_hits, drift_flagged, ...
        self.stats: dict[str, Any] = {"measured": 0, "cache_hits": 0}

    def measure(self, model_path: Path, inputs: dict[str, np.ndarray], runtime: RuntimeOptions) -> Measurement:
        self.stats["measured"] += 1
        return self.device.measure(model_path, inputs, runtime, self.protocol)
