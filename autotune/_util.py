"""Small helpers every stage uses; standard library only, so the agent can import them too."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (artifacts and uploads are content-addressed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def error_line(exc: BaseException, limit: int = 500, with_type: bool = True) -> str:
    """One readable line for an exception: ``Type: first line of the message``.

    Never raises, also for an exception with an empty message (``str(exc)`` is ``""``).
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if with_type or not first:
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return first[:limit]


def first_line(text: str, limit: int = 500) -> str:
    """The first non-empty line of ``text`` (empty string for empty text)."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""


def cache_root() -> Path:
    """Where autotune keeps caches: ``$AUTOTUNE_CACHE``, else ``$XDG_CACHE_HOME/autotune``,
    else ``~/.cache/autotune``."""
    if os.environ.get("AUTOTUNE_CACHE"):
        return Path(os.environ["AUTOTUNE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autotune"


class TimeLimit(BaseException):
    """Raised by :func:`time_limit` in the code it bounds; a BaseException, as KeyboardInterrupt
    is, so that the bounded code's own ``except Exception`` handlers let it through."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TimeLimit` in the block once ``seconds`` of wall time have passed.

    For pure-Python analyses of a user's model that can run for hours (torch-pruning's grouping
    is cubic in a group's size). A SIGALRM timer, so it bounds the main thread only: elsewhere,
    or with a timer already set, the block runs unbounded."""
    bounded = hasattr(signal, "setitimer") and seconds > 0  # no interval timers on Windows
    bounded = bounded and threading.current_thread() is threading.main_thread()
    if bounded and signal.getitimer(signal.ITIMER_REAL)[0] == 0:

        def expire(signum: int, frame: object) -> None:
            raise TimeLimit(f"over {seconds:g} s")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    else:
        yield
