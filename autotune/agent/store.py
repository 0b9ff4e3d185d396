"""Content-addressed model storage: ``<root>/models/<sha256>.onnx``.

The sha256 (64 lowercase hex characters, checked before any path is built) is the only thing
from a client that ever becomes part of a file name: that is the path-traversal defence.
Uploads stream into ``<root>/tmp/<random>.part``, are hashed and size-capped while they arrive,
validated (see :func:`autotune.agent.modelcheck.validate_model`, run in a subprocess), then renamed
into place atomically.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import threading
from pathlib import Path

from autotune.agent.schemas import SHA256_RE


class BadSha(ValueError):
    """Not a model id (64 lowercase hex)."""


class TooLarge(ValueError):
    """The upload is over the size cap."""


class NoSpace(OSError):
    """Uploads in progress would exceed the store's cap, or leave too little free disk."""


class ModelStore:
    """Models on disk, named by their sha256."""

    def __init__(self, root: Path, max_bytes: int, max_incoming: int = 0, min_free: int = 0) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_incoming = max_incoming  # all uploads in progress together (0: no cap)
        self.min_free = min_free  # free disk space every upload must leave
        self.incoming = 0
        self._lock = threading.Lock()
        self.models_dir = self.root / "models"
        self.tmp_dir = self.root / "tmp"
        for d in (self.models_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in self.tmp_dir.glob("*.part"):  # uploads cut short by a previous run
            stale.unlink(missing_ok=True)

    @staticmethod
    def check_sha(sha: str) -> str:
        if not SHA256_RE.fullmatch(sha):
            raise BadSha(f"model id must be 64 lowercase hex characters (a sha256), got {sha[:80]!r}")
        return sha

    def path(self, sha: str) -> Path:
        return self.models_dir / f"{self.check_sha(sha)}.onnx"

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def size(self, sha: str) -> int | None:
        """The model's size; None when it is not there (never uploaded, or just evicted)."""
        try:
            return self.path(sha).stat().st_size
        except FileNotFoundError:
            return None

    def reserve(self, n: int) -> None:
        """Count ``n`` more bytes of an upload in progress; NoSpace when they do not fit."""
        with self._lock:
            if self.max_incoming and self.incoming + n > self.max_incoming:
                raise NoSpace(
                    f"uploads in progress would exceed the store's cap of {self.max_incoming} bytes; "
                    "retry later"
                )
            if self.min_free and shutil.disk_usage(self.tmp_dir).free - n < self.min_free:
                raise NoSpace(f"the agent's disk would have less than {self.min_free} bytes free")
            self.incoming += n

    def release(self, n: int) -> None:
        with self._lock:
            self.incoming -= n

    def count(self) -> int:
        return sum(1 for _ in self.models_dir.glob("*.onnx"))

    def touch(self, sha: str) -> None:
        """Mark a model as used now (eviction removes the least recently used first)."""
        try:
            os.utime(self.path(sha))
        except OSError:
            pass

    def evict(self, max_total_bytes: int, keep: set[str]) -> list[str]:
        """Delete least recently used models until the store fits; never those in ``keep``.

        A client that needs an evicted model again gets ``409 unknown_model`` and re-uploads.
        """
        entries = []
        for p in self.models_dir.glob("*.onnx"):
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        removed: list[str] = []
        for _, size, p in sorted(entries):
            if total <= max_total_bytes:
                break
            if p.stem in keep:
                continue
            p.unlink(missing_ok=True)
            total -= size
            removed.append(p.stem)
        return removed

    def new_upload(self) -> Upload:
        return Upload(self.tmp_dir / f"{secrets.token_hex(16)}.part", self.max_bytes, self)

    def commit(self, upload: Upload, sha: str) -> Path:
        final = self.path(sha)
        os.replace(upload.path, final)
        return final


class Upload:
    """One upload in progress: bytes are hashed and counted as they are written."""

    def __init__(self, path: Path, max_bytes: int, store: ModelStore | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.store = store
        self.size = 0
        self.reserved = 0
        self._hash = hashlib.sha256()
        self._fh = open(path, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"model is larger than the agent's cap of {self.max_bytes} bytes")
        if self.store is not None:
            self.store.reserve(len(chunk))
            self.reserved += len(chunk)
        self._hash.update(chunk)
        self._fh.write(chunk)

    def finish(self) -> str:
        """Close the file and return the sha256 of what arrived."""
        self._fh.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        """Remove what is left of the upload (nothing after a commit) and stop counting it."""
        if not self._fh.closed:
            self._fh.close()
        self.path.unlink(missing_ok=True)
        if self.store is not None and self.reserved:
            self.store.release(self.reserved)
            self.reserved = 0
