"""One measurement per device at a time, across processes (an advisory file lock).

Two studies, a benchmark and ``autotune measure`` on one machine take turns instead of slowing
each other down. The lock is per process-open-file: do not nest two locks of the same name in
one process (it would wait for itself).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_path(name: str) -> Path:
    lock_dir = Path(os.environ.get("AUTOTUNE_LOCK_DIR", tempfile.gettempdir()))
    lock_dir.mkdir(parents=True, exist_ok=True)
    return lock_dir / f"autotune-device-{name}.lock"


@contextmanager
def device_lock(name: str, timeout_s: float | None = None, poll_s: float = 0.05) -> Iterator[float]:
    """Hold an exclusive lock named after the device while measuring on it.

    Yields the seconds spent waiting for it. Raises :class:`TimeoutError` when ``timeout_s``
    passes first (``None``: wait as long as it takes).
    """
    t0 = time.monotonic()
    with open(lock_path(name), "a+") as fh:
        if timeout_s is None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        else:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - t0 >= timeout_s:
                        raise TimeoutError(f"device {name!r} is busy (lock {fh.name} held)") from None
                    time.sleep(poll_s)
        try:
            yield time.monotonic() - t0
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
