"""One measurement per device at a time, across processes (an advisory file lock).

Two studies, a benchmark and ``autotune measure`` on one machine take turns instead of slowing
each other down, and so do the workers of one distributed study on one machine. The lock is
re-entrant within a thread: the measurement stage holds it around "is this cached? else
measure", and the device takes it again inside (a flock on a second open file of the same
name would wait for itself); another thread of the same process waits like another process.

The lock files live in a directory private to the user, ``<tmp>/autotune-<uid>`` (mode 0700,
checked to be this user's and not a link), and are opened without following symlinks: another
local user can neither hold a lock that stalls this user's measurements nor plant a link that
makes this user (root, say) create a file of the link's choosing. Measurements of different
users therefore do not take turns with each other. ``$AUTOTUNE_LOCK_DIR`` names another
directory (used as it is: sharing one between users is then that setting's choice).
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: seconds to wait for a device's lock when the caller names no timeout (unset: no limit);
#: the agent sets it for each job (``--lock-timeout``)
TIMEOUT_ENV = "AUTOTUNE_LOCK_TIMEOUT"


class DeviceBusy(TimeoutError):
    """Another process held the device's lock for longer than the timeout."""


def lock_dir() -> Path:
    """The user's private lock directory, created if needed; OSError when it is not private."""
    configured = os.environ.get("AUTOTUNE_LOCK_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path
    path = Path(tempfile.gettempdir()) / f"autotune-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PermissionError(
            f"lock directory {path} is not private to this user (a link, another owner, or writable "
            "by others); remove it or set AUTOTUNE_LOCK_DIR"
        )
    return path


def lock_path(name: str) -> Path:
    return lock_dir() / f"device-{name}.lock"


def _timeout_from_env() -> float | None:
    try:
        value = float(os.environ.get(TIMEOUT_ENV, ""))
    except ValueError:
        return None
    return value if value >= 0 else None


_held = threading.local()  # per thread: lock name -> depth


@contextmanager
def device_lock(name: str, timeout_s: float | None = None, poll_s: float = 0.05) -> Iterator[float]:
    """Hold an exclusive lock named after the device while measuring on it.

    Yields the seconds spent waiting for it (nested: what the outer one waited). Raises
    :class:`DeviceBusy` when ``timeout_s`` (None: ``$AUTOTUNE_LOCK_TIMEOUT``, else no limit)
    passes first.
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
    if timeout_s is None:
        timeout_s = _timeout_from_env()
    t0 = time.monotonic()
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(lock_path(name), flags, 0o600)
    try:
        if timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - t0 >= timeout_s:
                        raise DeviceBusy(
                            f"device {name!r} is busy: another process has been measuring on it for "
                            f"over {timeout_s:g} s (its lock is held); retry later"
                        ) from None
                    time.sleep(poll_s)
        depth[name], waited[name] = 1, time.monotonic() - t0
        try:
            yield waited[name]
        finally:
            depth[name] = 0
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
