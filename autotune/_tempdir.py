"""Temporary folders that a killed process leaves behind are removed by the next one.

``tempfile.TemporaryDirectory`` is removed when its process exits, by an exception or Ctrl-C
included, but not when the process is killed (SIGKILL, the OOM killer, a CI timeout): a killed
search left its build folder, up to 11 MB, in /tmp each time. So each folder holds an owner
file locked (``flock``) for as long as its process lives; the kernel drops the lock when the
process dies, however it dies, and whoever makes a folder of the same kind next removes the
folders whose lock it can take. A lock, not a PID: PIDs are reused, and differ between
containers that share /tmp.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO

#: the file whose lock says the folder's process is alive
OWNER_FILE = ".owner"


class OwnedTemporaryDirectory(tempfile.TemporaryDirectory[str]):
    """A ``TemporaryDirectory`` named ``autotune-KIND-*`` that the next one cleans up after a kill."""

    def __init__(self, kind: str) -> None:
        prefix = f"autotune-{kind}-"
        sweep_orphans(Path(tempfile.gettempdir()), prefix)
        super().__init__(prefix=prefix)
        self._owner = _locked_owner_file(Path(self.name))

    def cleanup(self) -> None:
        self._owner.close()
        super().cleanup()


def _locked_owner_file(directory: Path) -> IO[str]:
    # locked under a staging name, then renamed: a sweeper never sees an owner file unlocked
    staging = directory / f"{OWNER_FILE}.{os.getpid()}"
    fh = open(staging, "w")  # held open for the folder's lifetime
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(staging, directory / OWNER_FILE)
    return fh


def sweep_orphans(root: Path, prefix: str) -> list[Path]:
    """Remove the folders ``root/prefix*`` whose owner is gone; returns them.

    Left alone: folders without an owner file (made by older versions, or being made right
    now), folders whose owner holds its lock, and folders of other users.
    """
    removed = []
    for path in root.glob(f"{prefix}*"):
        try:
            with open(path / OWNER_FILE) as fh:  # read-only: never creates one
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # no owner file, locked by a live owner, or not ours
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
