"""Measurement stage: artifact + device + runtime options -> Measurement.

This package owns the stage's cache (:mod:`._cache`) and drift canary (:mod:`._canary`).

The Measurer is the one place that decides whether to measure:

* **cache** -- a measurement is keyed by (artifact sha256, device fingerprint, runtime options,
  protocol, inputs) and stored in ``cache_dir`` (``runs/STUDY/measurements``); an identical
  request is answered from disk (``cached=True``) unless ``remeasure``. Numbers are stored with
  their flags (an ``unstable`` or drift-flagged one stays flagged, and ``--remeasure`` refreshes
  it), and so are deterministic failures (invalid model, build error); transient failures
  (runtime error, OOM, timeout) are measured again.
* **drift** -- a canary model is measured before the first job (the reference, persisted in
  ``cache_dir`` so a resumed study compares against its own start), again every
  ``canary_every`` measured jobs, and right after any ``unstable`` job. Every measurement
  records ``drift_ratio`` = latest canary median / reference median; outside
  [1/threshold, threshold] it is flagged (``drift_flag``).
* **host load** -- when other processes took more than :data:`HOST_BUSY_SHARE` of the CPUs
  during a measurement, it carries ``host_busy`` (that share). The canary misses such
  load when each run is shorter than a scheduler slice; the paired ratio discounts it, the
  absolute figures do not.

* **reference** -- with a ``reference`` (the study's unmodified model), every candidate is
  timed interleaved with it (:meth:`Device.measure_paired`; two separate measurements on a
  backend without paired timing) and carries ``ratio`` / ``ratio_ci``. The cache key includes
  the reference's sha256. :meth:`Measurer.latency_ms` is the study's latency: the reference
  latency (median of window medians, :mod:`._reference`) x the ratio.

Counters for the summary are in :attr:`Measurer.stats`.

Example::

    from autotune.devices import OrtCpuDevice, Protocol, RuntimeOptions
    measurer = Measurer(OrtCpuDevice(), Protocol(), cache_dir=Path("runs/s/measurements"))
    m = measurer.measure(Path("model.onnx"), {"input": x}, RuntimeOptions(threads=1))
    print(m.median_ms, m.drift_ratio, measurer.stats)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from autotune._tempdir import OwnedTemporaryDirectory
from autotune._util import sha256_file
from autotune.devices import Device, Measurement, Protocol, Reference, RuntimeOptions, device_lock
from autotune.measure._cache import MeasurementCache, cache_key
from autotune.measure._canary import CANARY_VERSION, canary_inputs, write_canary
from autotune.measure._reference import ReferenceLatency, pair_separately

#: re-measure the canary after this many measured jobs (0 disables the canary)
DEFAULT_CANARY_EVERY = 8
#: canary slower or faster than its reference by more than this factor -> drift flag
DEFAULT_DRIFT_THRESHOLD = 1.15
#: other processes (or the hypervisor) took more than this share of all CPUs while measuring ->
#: host_busy flag. The canary cannot see this: time-slicing rarely lands inside a sub-ms run, so
#: medians barely move while the tail and the absolute figures do.
HOST_BUSY_SHARE = 0.25
#: statuses worth keeping: numbers (with their flags) and deterministic failures
CACHEABLE = ("ok", "unstable", "invalid_model", "build_error")


def canary_protocol(p: Protocol) -> Protocol:
    """A shorter protocol for the canary (still >= min_samples samples)."""
    return replace(
        p,
        warmup_s=min(p.warmup_s, 0.2),
        min_time_s=min(p.min_time_s, 0.3),
        max_time_s=min(p.max_time_s, 5.0),
        max_retries=min(p.max_retries, 1),
    )


class Measurer:
    """Measures artifacts on one device under one protocol, with a cache and a drift canary.

    Args:
        device: where to measure.
        protocol: how long and how often.
        cache_dir: where measurements persist (beside the study), or None for no cache.
        remeasure: ignore cached measurements (fresh ones are still stored).
        canary_every: re-measure the canary after this many measured jobs; 0 disables it.
            None: :data:`DEFAULT_CANARY_EVERY`.
        drift_threshold: flag a measurement when the canary ratio leaves [1/t, t].
        reference: time every candidate against this artifact (paired timing).
        cache: where measurements persist, overriding ``cache_dir``'s folder (a distributed
            study's artifact store); ``cache_dir`` still holds the canary.
    """

    def __init__(
        self,
        device: Device,
        protocol: Protocol,
        cache_dir: Path | None = None,
        remeasure: bool = False,
        canary_every: int | None = None,
        drift_threshold: float = DEFAULT_DRIFT_THRESHOLD,
        reference: Reference | None = None,
        cache: MeasurementCache | None = None,
    ) -> None:
        self.device = device
        self.protocol = protocol
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.remeasure = remeasure
        self.canary_every = DEFAULT_CANARY_EVERY if canary_every is None else canary_every
        self.drift_threshold = drift_threshold
        if cache is None and self.cache_dir is not None:
            cache = MeasurementCache(self.cache_dir)
        self.cache = cache
        if reference is not None and not reference.sha256:
            reference = Reference(reference.path, reference.inputs, sha256_file(reference.path))
        self.reference = reference
        #: per runtime-options key: the reference's window medians
        self.reference_latency: dict[str, ReferenceLatency] = {}
        #: counters shown in the summary
        self.stats: dict[str, Any] = {
            "measured": 0,
            "cache_hits": 0,
            "canary_runs": 0,
            "drift_flagged": 0,
            "unstable": 0,
        }
        self._fingerprint: dict[str, Any] | None = None
        self._canary_path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        # per runtime-options key: reference canary median, latest canary reading, jobs since it
        self._reference: dict[str, dict[str, Any]] = {}
        self._latest: dict[str, dict[str, Any]] = {}
        self._since: dict[str, int] = {}

    # -- public -----------------------------------------------------------------------------
    @property
    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = self.device.fingerprint()
        return self._fingerprint

    def measure(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        runtime: RuntimeOptions,
        protocol: Protocol | None = None,
    ) -> Measurement:
        """A measurement of ``model_path``: from the cache when identical, else measured.

        ``protocol`` overrides the Measurer's (e.g. a longer one to confirm a result).
        """
        protocol = protocol or self.protocol
        if not self.device.measures_locally:
            return self._cached_or_measured(model_path, inputs, runtime, protocol)
        # "cached? else measure" under the device's lock: the workers of a study on this host
        # take turns, and the second to want an artifact finds the first one's measurement
        with device_lock(self.device.lock_name):
            return self._cached_or_measured(model_path, inputs, runtime, protocol)

    def _cached_or_measured(
        self, model_path: Path, inputs: dict[str, np.ndarray], runtime: RuntimeOptions, protocol: Protocol
    ) -> Measurement:
        rkey = _runtime_key(runtime)
        key = parts = None
        if self.cache is not None:
            key, parts = cache_key(
                sha256_file(model_path),
                self.device.backend,
                self.fingerprint,
                runtime,
                protocol,
                inputs,
                reference=self.reference.sha256 if self.reference else None,
            )
            if not self.remeasure:
                hit = self.cache.get(key)
                if hit is not None:
                    self.stats["cache_hits"] += 1
                    self._add_window(rkey, hit)
                    return hit
        if self._canary_due(rkey):
            self._measure_canary(runtime)
        m = self._measure(Path(model_path), inputs, runtime, protocol)
        self._add_window(rkey, m)
        self.stats["measured"] += 1
        self._since[rkey] = self._since.get(rkey, 0) + 1
        if m.status == "unstable":
            self.stats["unstable"] += 1
            if self.canary_every > 0:  # suspicious: check the device right away
                self._measure_canary(runtime)
        self._annotate(m, rkey)
        self._note_host_load(m)
        if self.cache is not None and key and parts and m.status in CACHEABLE:
            self.cache.put(key, parts, m)
        return m

    def latency_ms(self, m: Measurement, runtime: RuntimeOptions) -> float:
        """The study's latency of ``m``: reference latency x ratio (its own median unpaired)."""
        if m.ratio is None:
            return m.median_ms
        ref = self.reference_latency.get(_runtime_key(runtime))
        estimate = ref.estimate_ms if ref is not None and ref.windows else m.reference_median_ms
        return float(estimate * m.ratio) if estimate is not None else m.median_ms

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- reference ----------------------------------------------------------------------------
    def _measure(
        self, model_path: Path, inputs: dict[str, np.ndarray], runtime: RuntimeOptions, protocol: Protocol
    ) -> Measurement:
        ref = self.reference
        if ref is None:
            return self.device.measure(model_path, inputs, runtime, protocol)
        if self.device.supports_paired:
            return self.device.measure_paired(model_path, inputs, ref, runtime, protocol)
        m = self.device.measure(model_path, inputs, runtime, protocol)
        if not m.usable:
            return m
        return pair_separately(m, self.device.measure(ref.path, ref.inputs, runtime, protocol), ref.sha256)

    def _add_window(self, rkey: str, m: Measurement) -> None:
        if m.ratio is None:
            return
        ref = self.reference_latency.setdefault(rkey, ReferenceLatency())
        ref.add(m.reference_median_ms)
        self.stats["reference"] = ref.to_dict()
        # re-check: a window far from the study's estimate means the host's speed moved; the
        # ratio holds, the window's absolute numbers do not
        if m.reference_median_ms and len(ref.windows) > 1:
            off = m.reference_median_ms / ref.estimate_ms
            m.extra["reference_window"] = {"median_ms": m.reference_median_ms, "vs_estimate": round(off, 4)}
            if abs(math.log(off)) > math.log(self.drift_threshold):
                self.stats["reference_windows_off"] = self.stats.get("reference_windows_off", 0) + 1

    # -- drift ------------------------------------------------------------------------------
    def _canary_due(self, rkey: str) -> bool:
        if self.canary_every <= 0:
            return False
        # the first job (reference), then every canary_every measured jobs; a failed canary is
        # not retried before that either
        return rkey not in self._latest or self._since.get(rkey, 0) >= self.canary_every

    def _canary_file(self) -> Path:
        if self._canary_path is None:
            if self.cache_dir is not None:
                directory = self.cache_dir
            else:
                self._tmp = OwnedTemporaryDirectory("canary")
                directory = Path(self._tmp.name)
            self._canary_path = write_canary(directory)
        return self._canary_path

    def _reference_file(self) -> Path | None:
        return self.cache_dir / "canary.json" if self.cache_dir is not None else None

    def _reference_key(self, rkey: str) -> str:
        blob = json.dumps(
            {
                "fp": self.fingerprint,
                "rt": rkey,
                "v": CANARY_VERSION,
                "p": canary_protocol(self.protocol).to_dict(),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def _load_reference(self, rkey: str) -> dict[str, Any] | None:
        path = self._reference_file()
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text()).get(self._reference_key(rkey))
        except (OSError, ValueError):
            return None

    def _save_reference(self, rkey: str, ref: dict[str, Any]) -> None:
        path = self._reference_file()
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            data = {}
        data.setdefault(self._reference_key(rkey), ref)  # the first reference wins
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)

    def _measure_canary(self, runtime: RuntimeOptions) -> None:
        rkey = _runtime_key(runtime)
        m = self.device.measure(self._canary_file(), canary_inputs(), runtime, canary_protocol(self.protocol))
        self.stats["canary_runs"] += 1
        self._since[rkey] = 0
        reading = {
            "median_ms": m.median_ms if m.usable else None,
            "status": m.status,
            "error": m.error,
            "time": round(time.time(), 1),
        }
        if rkey not in self._reference:
            stored = self._load_reference(rkey)
            if stored is None and m.usable:
                stored = {"median_ms": m.median_ms, "status": m.status, "time": reading["time"]}
                self._save_reference(rkey, stored)
            if stored is not None:
                self._reference[rkey] = stored
        self._latest[rkey] = reading

    def _annotate(self, m: Measurement, rkey: str) -> None:
        ref = self._reference.get(rkey)
        latest = self._latest.get(rkey)
        if ref is None or latest is None:
            if self.canary_every > 0:
                m.extra["canary"] = {
                    "status": latest["status"] if latest else "not measured",
                    "error": latest.get("error") if latest else None,
                }
            return
        m.extra["canary"] = {
            "median_ms": latest["median_ms"],
            "reference_ms": ref["median_ms"],
            "status": latest["status"],
            "jobs_since": self._since.get(rkey, 0),
        }
        if latest["median_ms"] is None:
            return
        ratio = latest["median_ms"] / ref["median_ms"]
        m.drift_ratio = round(ratio, 4)
        self.stats["max_drift"] = round(max(self.stats.get("max_drift", 1.0), ratio, 1 / ratio), 3)
        if abs(math.log(ratio)) > math.log(self.drift_threshold):
            m.drift_flag = True
            self.stats["drift_flagged"] += 1

    def _note_host_load(self, m: Measurement) -> None:
        share = m.host_load.busy if m.host_load is not None else 0.0
        if share > HOST_BUSY_SHARE:
            m.host_busy = round(share, 3)
            self.stats["host_busy"] = self.stats.get("host_busy", 0) + 1


def _runtime_key(runtime: RuntimeOptions) -> str:
    return json.dumps(runtime.to_dict(), sort_keys=True)
