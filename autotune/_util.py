"""Small helpers every stage uses; standard library only, so the agent can import them too."""

from __future__ import annotations

import hashlib
import os
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
