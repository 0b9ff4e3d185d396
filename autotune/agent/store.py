"""Content-addressed model storage: ``<root>/models/<sha256>.onnx``.

The sha256 (64 lowercase hex characters, checked before any path is built) is the only thing
from a client that ever becomes part of a file name: that is the path-traversal defence.
Uploads stream into ``<root>/tmp/<random>.part``, are hashed and size-capped while they arrive,
validated (see :func:`autotune.agent.job.validate_model`, run in a subprocess), then renamed
into place atomically.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from autotune.agent.schemas import SHA256_RE


class BadSha(ValueError):
    """Not a model id (64 lowercase hex)."""


class TooLarge(ValueError):
    """The upload is over the size cap."""


class ModelStore:
    """Models on disk, named by their sha256."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
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

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size

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
        return Upload(self.tmp_dir / f"{secrets.token_hex(16)}.part", self.max_bytes)

    def commit(self, upload: Upload, sha: str) -> Path:
        final = self.path(sha)
        os.replace(upload.path, final)
        return final


class Upload:
    """One upload in progress: bytes are hashed and counted as they are written."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self._fh = open(path, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"model is larger than the agent's cap of {self.max_bytes} bytes")
        self._hash.update(chunk)
        self._fh.write(chunk)

    def finish(self) -> str:
        """Close the file and return the sha256 of what arrived."""
        self._fh.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.path.unlink(missing_ok=True)
