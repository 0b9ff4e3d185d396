"""Search space stage: which knobs, with which values, in which layers of this model, on this device.

:func:`build_space` discovers the layers of a task, probes which knobs really work on it, and
narrows them by a ``search_spaces/*.yaml`` preset and a ``device_profiles/*.yaml`` profile.
"""

from autotune.space._profiles import DeviceProfile, available_profiles, data_dir, load_profile
from autotune.space._space import (
    Candidate,
    Layer,
    Preset,
    SearchSpace,
    available_presets,
    build_space,
    load_preset,
)

__all__ = [
    "Candidate",
    "DeviceProfile",
    "Layer",
    "Preset",
    "SearchSpace",
    "available_presets",
    "available_profiles",
    "build_space",
    "data_dir",
    "load_preset",
    "load_profile",
]
