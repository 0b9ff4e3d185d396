"""Health readings for ``GET /v1/info``: psutil everywhere, tegrastats on a Jetson.

tegrastats (when on PATH) runs as one long-lived process streaming a line per interval; the
latest line is kept with a few parsed fields (RAM, GPU load, temperatures). Readings are
cheap, so an info request never disturbs a running measurement.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil

_RAM = re.compile(r"RAM (\d+)/(\d+)MB")
_GPU = re.compile(r"GR3D_FREQ (\d+)%")
_TEMP = re.compile(r"([A-Za-z0-9_]+)@(-?[\d.]+)C")
_POWER = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)mW")


def parse_tegrastats(line: str) -> dict[str, Any]:
    """Pick the fields that matter for latency out of one tegrastats line."""
    out: dict[str, Any] = {"line": line.strip()[:500]}
    if m := _RAM.search(line):
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    if m := _GPU.search(line):
        out["gpu_load_percent"] = int(m.group(1))
    temps = {k.lower(): float(v) for k, v in _TEMP.findall(line)}
    if temps:
        out["temps_c"] = temps
    power = {k: int(v) for k, v in _POWER.findall(line)}
    if power:
        out["power_mw"] = power
    return out


class Tegrastats:
    """Background reader of ``tegrastats --interval MS`` (no-op where it is not installed)."""

    def __init__(self, interval_ms: int = 1000) -> None:
        self.interval_ms = interval_ms
        self.latest: dict[str, Any] | None = None
        self.at = 0.0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> bool:
        exe = shutil.which("tegrastats")
        if exe is None:
            return False
        try:
            self._proc = subprocess.Popen(
                [exe, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            return False
        threading.Thread(target=self._read, daemon=True).start()
        return True

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.latest, self.at = parse_tegrastats(line), time.time()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def health(root: Path, tegra: Tegrastats | None = None, started: float | None = None) -> dict[str, Any]:
    """Load, memory, disk, temperatures (and tegrastats) right now."""
    vm = psutil.virtual_memory()
    out: dict[str, Any] = {
        "status": "ok",
        "cpu_percent": psutil.cpu_percent(interval=None),
        "load_avg": [round(x, 2) for x in psutil.getloadavg()],
        "memory_available_mb": round(vm.available / 2**20),
        "memory_percent": vm.percent,
    }
    try:
        du = shutil.disk_usage(root)
        out["disk_free_mb"] = round(du.free / 2**20)
    except OSError:
        pass
    try:
        freq = psutil.cpu_freq()
        if freq is not None:
            out["cpu_mhz"] = round(freq.current)
    except (OSError, NotImplementedError):
        pass
    temps: dict[str, Any] = getattr(psutil, "sensors_temperatures", lambda: {})()
    readings = [t.current for entries in temps.values() for t in entries if t.current]
    if readings:
        out["temp_c_max"] = max(readings)
    if started is not None:
        out["uptime_s"] = round(time.time() - started, 1)
    if tegra is not None and tegra.latest is not None:
        out["tegrastats"] = {**tegra.latest, "age_s": round(time.time() - tegra.at, 1)}
    if vm.percent > 95 or out.get("disk_free_mb", 1 << 30) < 100:
        out["status"] = "degraded"
    return out
