"""CUDA without a CUDA Python package: the driver API through ctypes, for probing and fingerprints.

Importing this module never needs a GPU; every function answers with a reason instead of raising.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from functools import cache
from typing import Any

_CU_ATTR_CC_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
_CU_ATTR_CC_MINOR = 76
_CU_ATTR_SM_COUNT = 16  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT


@cache
def _driver() -> tuple[ctypes.CDLL | None, str]:
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        rc = lib.cuInit(0)
        if rc != 0:
            return None, f"the CUDA driver ({name}) failed to initialise (CUresult {rc})"
        return lib, ""
    return None, "no CUDA driver (libcuda.so.1 not found): no NVIDIA GPU or driver on this machine"


def gpu_count() -> tuple[int, str]:
    """(number of CUDA devices, why none)."""
    lib, why = _driver()
    if lib is None:
        return 0, why
    count = ctypes.c_int(0)
    rc = lib.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0:
        return 0, f"cuDeviceGetCount failed (CUresult {rc})"
    return count.value, "" if count.value else "the CUDA driver sees no GPU"


@cache
def gpu_info(index: int = 0) -> dict[str, Any]:
    """Name, compute capability, SM count, memory and driver version of GPU ``index``."""
    lib, why = _driver()
    if lib is None:
        return {"error": why}
    dev = ctypes.c_int(0)
    if lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
        return {"error": f"no CUDA device {index}"}
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, 256, dev)
    major, minor, sms = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev)
    lib.cuDeviceGetAttribute(ctypes.byref(sms), _CU_ATTR_SM_COUNT, dev)
    mem = ctypes.c_size_t(0)
    lib.cuDeviceTotalMem_v2(ctypes.byref(mem), dev)
    version = ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(version))
    return {
        "gpu": name.value.decode(errors="replace"),
        "gpu_index": index,
        "compute_capability": f"{major.value}.{minor.value}",
        "sm_count": sms.value,
        "gpu_memory_gb": round(mem.value / 2**30, 1),
        "cuda_driver": f"{version.value // 1000}.{version.value % 1000 // 10}",
    }


def compute_capability(index: int = 0) -> tuple[int, int]:
    cc = gpu_info(index).get("compute_capability", "0.0")
    major, minor = cc.split(".")
    return int(major), int(minor)


def gpu_state(index: int = 0) -> dict[str, Any]:
    """Volatile readings (SM clock, temperature, power, utilisation) from nvidia-smi, if present."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    fields = ("clocks.sm", "clocks.max.sm", "temperature.gpu", "power.draw", "utilization.gpu")
    try:
        out = subprocess.run(
            [exe, f"--id={index}", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.split(",")]
    state: dict[str, Any] = {}
    for key, value in zip(("sm_mhz", "sm_mhz_max", "temp_c", "power_w", "util_pct"), values, strict=False):
        try:
            state[key] = float(value)
        except ValueError:
            continue
    return state
