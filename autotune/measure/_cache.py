"""The measurement cache: one JSON file per (artifact, device, runtime options, protocol, inputs).

A resumed or repeated study finds its measurements here (``runs/STUDY/measurements``) instead of
measuring an identical artifact again. The key is a sha256 over the parts, which are stored
beside the measurement so an entry explains itself. Writes are atomic (temp file + rename), so
parallel workers and a killed process never leave a half-written entry.

A distributed study keeps its cache in the study's artifact store instead (any object with the
``open_reader`` / ``write`` methods of an Optuna ``ArtifactStore``), so no worker, on any
machine, measures an artifact another one measured on the same device.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from autotune.records import Measurement, Protocol, RuntimeOptions

#: bump when the meaning of a stored measurement changes (protocol semantics, statistics)
CACHE_VERSION = 3  # 3: paired timing (reference in the key, pair_block_ms in the protocol)
MAX_CACHED_SAMPLES = 4096


def inputs_signature(inputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Name, shape, dtype and content hash of every input (batch size changes latency)."""
    sig = []
    for name in sorted(inputs):
        a = np.ascontiguousarray(inputs[name])
        sig.append(
            {
                "name": name,
                "shape": list(a.shape),
                "dtype": str(a.dtype),
                "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
            }
        )
    return sig


def cache_key(
    artifact_sha256: str,
    backend: str,
    fingerprint: dict[str, Any],
    runtime: RuntimeOptions,
    protocol: Protocol,
    inputs: dict[str, np.ndarray],
    reference: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """(hex key, the parts it hashes); ``reference``: the sha256 of the paired reference."""
    parts = {
        "version": CACHE_VERSION,
        "artifact": artifact_sha256,
        "backend": backend,
        "fingerprint": fingerprint,
        "runtime": runtime.to_dict(),
        "protocol": protocol.to_dict(),
        "inputs": inputs_signature(inputs),
        "reference": reference,
    }
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest(), parts


class MeasurementCache:
    """Measurements on disk, one ``<key>.json`` each.

    Example::

        cache = MeasurementCache(Path("runs/my-study/measurements"))
        key, parts = cache_key(sha, "ort-cpu", fp, RuntimeOptions(), Protocol(), inputs)
        m = cache.get(key) or cache.put(key, parts, device.measure(...))
    """

    def __init__(self, directory: str | Path | None = None, store: Any = None, prefix: str = "") -> None:
        if (directory is None) == (store is None):
            raise ValueError("give a directory or an artifact store")
        self.directory = Path(directory) if directory is not None else None
        self.store, self.prefix = store, prefix

    def path(self, key: str) -> Path:
        assert self.directory is not None, "a store-backed cache has no paths"
        return self.directory / f"{key}.json"

    def get(self, key: str) -> Measurement | None:
        """The stored measurement (``cached=True``), or None if absent or unreadable."""
        try:
            if self.store is not None:
                with self.store.open_reader(f"{self.prefix}{key}.json") as fh:
                    entry = json.loads(fh.read())
            else:
                entry = json.loads(self.path(key).read_text())
            m = Measurement.from_dict(entry["measurement"])
        except Exception:  # noqa: BLE001 - absent (ArtifactNotFound), unreadable or old: measure again
            return None
        m.cached = True
        return m

    def put(self, key: str, parts: dict[str, Any], m: Measurement) -> Measurement:
        """Store ``m`` atomically; returns it unchanged."""
        entry = {"key": parts, "measurement": m.to_dict(max_samples=MAX_CACHED_SAMPLES)}
        if self.store is not None:
            blob = json.dumps(entry, default=_json_default).encode()
            self.store.write(f"{self.prefix}{key}.json", io.BytesIO(blob))
            return m
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(entry, fh, default=_json_default)
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return m

    def __len__(self) -> int:
        if self.directory is None:
            raise TypeError("a store-backed cache cannot count its entries")
        return sum(1 for _ in self.directory.glob("*.json")) if self.directory.is_dir() else 0


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)
