"""One measurement per device at a time, across processes (an advisory file lock).

Two studies, a benchmark and ``autotune measure`` on one machine take turns instead of slowing
each other down, and so do the workers of one distributed study on one machine. The lock is
re-entrant within a thread: the measurement stage holds it around "is this cached? else
measure", and the device takes it again inside (a flock on a second open file of the same
name would wait for itself); another thread of the same process waits like another process.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_path(name: str) -> Path:
    lock_dir = Path(os.environ.get("AUTOTUNE_LOCK_DIR", tempfile.gettempdir()))
    lock_dir.mkdir(parents=True, exist_ok=True)
    return lock_dir / f"autotune-device-{name}.lock"


_held = threading.local()  # per thread: lock name -> depth


@contextmanager
def device_lock(name: str, timeout_s: float | None = None, poll_s: float = 0.05) -> Iterator[float]:
    """Hold an exclusive lock named after the device while measuring on it.

    Yields the seconds spent waiting for it (nested: what the outer one waited). Raises
    :class:`TimeoutError` when ``timeout_s`` passes first (``None``: wait as long as it takes).
    """
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    waited: dict[str, float] = _held.__dict__.setdefault("waited", {})
    if depth.get(name):
        depth[name] += 1
        try:
            yield waited[name]
        finally:
            depth[name] -= 1
        return
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
        depth[name], waited[name] = 1, time.monotonic() - t0
        try:
            yield waited[name]
        finally:
            depth[name] = 0
            fcntl.flock(fh, fcntl.LOCK_UN)
