"""Where a study's files live: an Optuna artifact store (``optuna.artifacts``) any worker reaches.

Every trial's ONNX file, its export JSON and its failure traceback go to one store, chosen by
``--artifacts URL`` and recorded with the study (:class:`~autotune.study.StudySettings`):

* ``file:///shared/dir`` or a plain path: :class:`FileSystemArtifactStore` on a directory every
  worker mounts (NFS, a shared disk). The default for a local run is ``runs/<study>/artifacts``,
  the folder the builder writes to, so a local run stores nothing twice.
* ``s3://bucket[/prefix]``: :class:`Boto3ArtifactStore` (any S3-compatible server; the endpoint
  and keys come from boto3's own settings, e.g. ``AWS_ENDPOINT_URL``). Needs the ``s3`` extra.

Every store is wrapped in Optuna's :class:`Backoff`, so a flaky network share or S3 endpoint is
retried with exponential back-off instead of failing the trial.

An ONNX file is content-addressed: its artifact id is ``<sha256>.onnx``, written once however
many trials (or workers) build it, and checked against its hash when it is fetched. Each trial
that produced it is linked to it the way :func:`optuna.artifacts.upload_artifact` links a file,
so :func:`optuna.artifacts.get_all_artifact_meta` and optuna-dashboard list it. The export JSON
and the traceback are per trial and go through :func:`~optuna.artifacts.upload_artifact` itself.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlparse

import optuna
from optuna.artifacts import Backoff, FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from autotune._util import error_line, sha256_file
from autotune.errors import UserError
from autotune.study._records import link_artifact

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

#: ids under which the measurement cache keeps its entries in a shared store
MEASUREMENTS_PREFIX = "measurements/"
#: file names of a trial's uploads: trial<N>.json (the export JSON), trial<N>-traceback.txt
EXPORT_SUFFIX = ".json"
TRACEBACK_SUFFIX = "-traceback.txt"


def onnx_id(sha256: str) -> str:
    """The artifact id of an ONNX file: its content hash (one file stored once)."""
    return f"{sha256}.onnx"


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """Optuna's file store, but a write lands whole or not at all (temp file + rename).

    A worker killed mid-write must not leave a truncated ``<sha256>.onnx`` that every later
    worker takes for the real file; and ids with a folder (``measurements/...``) get it.
    """

    def __init__(self, base_path: str | Path) -> None:
        super().__init__(base_path)
        self.base_path = Path(base_path)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        target = self._get_filepath(artifact_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                while chunk := content_body.read(1 << 20):
                    fh.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _Prefixed:
    """An artifact store whose ids live under a key prefix (``s3://bucket/prefix``)."""

    def __init__(self, inner: ArtifactStore, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix.strip("/") + "/"

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.inner.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.inner.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self.prefix + artifact_id)


def normalize_url(url: str | Path) -> str:
    """``/abs/dir``, ``rel/dir`` or ``file:///abs/dir`` -> ``file:///abs/dir``; ``s3://`` as is."""
    text = str(url)
    if text.startswith("s3://"):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = unquote(urlparse(text).path)
    elif "://" in text:
        raise UserError(f"--artifacts {url}: use a directory (file:///path) or s3://bucket[/prefix]")
    return Path(text).expanduser().resolve().as_uri()


def local_dir(url: str) -> Path | None:
    """The directory of a ``file://`` store URL; None for other stores."""
    return Path(unquote(urlparse(url).path)) if url.startswith("file://") else None


class Store:
    """The study's artifact store: an Optuna ``ArtifactStore`` (Backoff-wrapped) and its URL.

    Args:
        url: ``file:///dir`` or ``s3://bucket[/prefix]`` (:func:`normalize_url`).
        create: make a missing directory (the study's creator); a worker joining a study whose
            directory is not there gets one line instead of writing to a folder nobody else sees.
    """

    def __init__(self, url: str, create: bool = False) -> None:
        self.url = normalize_url(url)
        self.raw: ArtifactStore
        directory = local_dir(self.url)
        if directory is not None:
            if create:
                directory.mkdir(parents=True, exist_ok=True)
            if not directory.is_dir():
                raise UserError(
                    f"the artifact store {self.url} is not a directory on this machine: mount the "
                    "shared directory at that path, or give its path here with --artifacts"
                )
            self.raw = AtomicFileSystemArtifactStore(directory)
        else:
            self.raw = _s3_store(self.url)
        # transient errors (a dropped NFS mount, an S3 hiccup) are retried, not failed
        self.store: ArtifactStore = Backoff(self.raw, max_retries=6, min_delay=0.2, max_delay=10)

    @property
    def directory(self) -> Path | None:
        return local_dir(self.url)

    def exists(self, artifact_id: str) -> bool:
        try:
            # the raw store: a missing file is an answer, not an error worth backing off for
            with self.raw.open_reader(artifact_id):
                return True
        except ArtifactNotFound:
            return False

    def put_file(self, path: Path, artifact_id: str) -> bool:
        """Store ``path`` under ``artifact_id`` unless already there; True when written."""
        directory = self.directory
        if directory is not None and (directory / artifact_id).resolve() == path.resolve():
            return False  # the local default: the builder wrote it in place
        if self.exists(artifact_id):
            return False
        with open(path, "rb") as fh:
            self.store.write(artifact_id, fh)
        return True

    def put_onnx(self, path: Path, sha256: str) -> str:
        """Store an ONNX file content-addressed; returns its artifact id."""
        artifact_id = onnx_id(sha256)
        self.put_file(path, artifact_id)
        return artifact_id

    def fetch(self, artifact_id: str, dest: Path, sha256: str | None = None) -> Path:
        """Download ``artifact_id`` to ``dest`` (atomically); checks ``sha256`` when given."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, self._reader(artifact_id) as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            if sha256 is not None and (got := sha256_file(tmp)) != sha256:
                raise UserError(
                    f"{self.url}: {artifact_id} is corrupt (sha256 {got[:12]}..., not {sha256[:12]}...)"
                )
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    @contextmanager
    def _reader(self, artifact_id: str) -> Iterator[BinaryIO]:
        try:
            reader = self.store.open_reader(artifact_id)
        except ArtifactNotFound:
            raise UserError(f"{artifact_id} is not in the artifact store {self.url}") from None
        except Exception as exc:  # noqa: BLE001 - after Backoff's retries: one line
            raise UserError(f"cannot read {artifact_id} from {self.url}: {error_line(exc)}") from None
        try:
            yield reader
        finally:
            reader.close()

    # -- what Optuna knows of a trial's files ---------------------------------------------------
    def link(self, trial: optuna.Trial, artifact_id: str, filename: str, mimetype: str) -> None:
        """List a stored file among ``trial``'s artifacts, as ``upload_artifact`` would."""
        link_artifact(trial, artifact_id, filename, mimetype)

    def upload(self, trial: optuna.Trial | optuna.trial.FrozenTrial, path: Path, storage: Any = None) -> str:
        """A per-trial file (export JSON, traceback) through ``optuna.artifacts.upload_artifact``."""
        return upload_artifact(
            artifact_store=self.store, file_path=str(path), study_or_trial=trial, storage=storage
        )

    @staticmethod
    def find(trial: optuna.trial.FrozenTrial, storage: Any, suffix: str) -> str | None:
        """The id of ``trial``'s artifact whose file name ends with ``suffix`` (newest wins)."""
        found = [
            m.artifact_id
            for m in get_all_artifact_meta(trial, storage=storage)
            if m.filename.endswith(suffix)
        ]
        return found[-1] if found else None


def _s3_store(url: str) -> ArtifactStore:
    try:
        import boto3  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise UserError(f"--artifacts {url}: needs boto3 (pip install 'autotune-hw[s3]')") from None
    from optuna.artifacts import Boto3ArtifactStore

    parsed = urlparse(url)
    if not parsed.netloc:
        raise UserError(f"--artifacts {url}: expected s3://bucket[/prefix]")
    store: ArtifactStore = Boto3ArtifactStore(parsed.netloc, client=boto3.client("s3"))
    return _Prefixed(store, parsed.path) if parsed.path.strip("/") else store
