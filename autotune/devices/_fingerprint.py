"""What identifies the machine a measurement was taken on."""

from __future__ import annotations

import platform
import time
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
    # only stable facts here (this is part of the cache key): the current clock is in host_state
    try:
        freq = psutil.cpu_freq()
        if freq is not None and freq.max:
            fp["cpu_mhz_max"] = round(freq.max)
    except (OSError, NotImplementedError):
        pass
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor:
        fp["cpu_governor"] = governor  # "performance" and "powersave" time differently
    return fp


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def host_state() -> dict[str, Any]:
    """Volatile readings taken at measurement time (not part of the cache key)."""
    state: dict[str, Any] = {"load_avg_1m": round(psutil.getloadavg()[0], 2)}
    try:
        freq = psutil.cpu_freq()
        if freq is not None:
            state["cpu_mhz"] = round(freq.current)
    except (OSError, NotImplementedError):
        pass
    temps: dict[str, list[Any]] = getattr(psutil, "sensors_temperatures", lambda: {})()
    readings = [t.current for entries in temps.values() for t in entries if t.current]
    if readings:
        state["temp_c_max"] = max(readings)
    return state


def _busy_and_steal(t: object) -> tuple[float, float, float]:
    """(busy, steal, total) seconds from ``psutil.cpu_times()`` (guest time is inside user)."""
    fields = {k: float(getattr(t, k)) for k in t._fields if k not in ("guest", "guest_nice")}  # type: ignore[attr-defined]
    total = sum(fields.values())
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    steal = fields.get("steal", 0.0)
    return total - idle - steal, steal, total


class HostLoad:
    """What else ran on the machine while we measured: a witness for drift.

    ``foreign_cpu``: CPU time used by other processes, as a fraction of all logical cores;
    ``steal``: time the hypervisor gave to other VMs (same units). Both near 0 on a quiet host.

    Example::

        with HostLoad() as load:
            ...  # measure
        load.to_dict()  # {"foreign_cpu": 0.01, "steal": 0.0, "own_cpu": 0.5, "wall_s": 2.1}
    """

    def __enter__(self) -> HostLoad:
        self._proc = psutil.Process()
        self._t0 = time.monotonic()
        self._sys0 = _busy_and_steal(psutil.cpu_times())
        own = self._proc.cpu_times()
        self._own0 = own.user + own.system
        self.result: dict[str, float] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._t0
        busy1, steal1, total1 = _busy_and_steal(psutil.cpu_times())
        own = self._proc.cpu_times()
        own_s = own.user + own.system - self._own0
        cpus = psutil.cpu_count() or 1
        capacity = max(total1 - self._sys0[2], wall * cpus, 1e-9)
        self.result = {
            "foreign_cpu": round(max(0.0, (busy1 - self._sys0[0] - own_s) / capacity), 3),
            "steal": round(max(0.0, (steal1 - self._sys0[1]) / capacity), 3),
            "own_cpu": round(own_s / max(wall, 1e-9), 3),
            "wall_s": round(wall, 3),
        }

    def to_dict(self) -> dict[str, float]:
        return dict(self.result)
