"""One measurement per device at a time, across processes (an advisory file lock)."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def device_lock(name: str) -> Iterator[None]:
    """Hold an exclusive lock named after the device while measuring on it."""
    lock_dir = Path(os.environ.get("AUTOTUNE_LOCK_DIR", tempfile.gettempdir()))
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"autotune-device-{name}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
