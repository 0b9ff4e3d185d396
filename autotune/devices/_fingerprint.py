"""What identifies the machine a measurement was taken on."""

from __future__ import annotations

import platform
from functools import cache
from typing import Any

import psutil


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_fingerprint() -> dict[str, Any]:
    """CPU model, cores, memory, OS; frequency and temperature where psutil can read them."""
    fp: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    try:
        freq = psutil.cpu_freq()
        if freq is not None:
            fp["cpu_mhz_max"] = round(freq.max or freq.current)
    except (OSError, NotImplementedError):
        pass
    return fp


def host_state() -> dict[str, Any]:
    """Volatile readings taken at measurement time (not part of the cache key)."""
    state: dict[str, Any] = {"load_avg_1m": round(psutil.getloadavg()[0], 2)}
    try:
        freq = psutil.cpu_freq()
        if freq is not None:
            state["cpu_mhz"] = round(freq.current)
    except (OSError, NotImplementedError):
        pass
    temps = getattr(psutil, "sensors_temperatures", lambda: {})()
    readings = [t.current for entries in temps.values() for t in entries if t.current]
    if readings:
        state["temp_c_max"] = max(readings)
    return state
