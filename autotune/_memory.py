"""The search's memory budget (``--max-memory``): a limit the kernel enforces on the search process.

Mechanism: the soft ``RLIMIT_DATA`` of the search process, for the search's duration (restored
after it). Since Linux 4.7 it bounds every private writable mapping (malloc's heap and its mmaps,
torch's and numpy's buffers, onnxruntime's arena, thread stacks), not reserved address space, and
an allocation past it fails *in the allocating call*: torch raises ``RuntimeError: ...
DefaultCPUAllocator: can't allocate memory``, numpy ``MemoryError``, onnxruntime ``Fail: ...
Failed to allocate memory``. The build stage that made it becomes a FAILED trial with stage
``memory`` and the search goes on; the process never grows past the limit, so the kernel's OOM
killer has nothing of ours to kill. Why not the alternatives (measured, docs/memory.md):
``RLIMIT_AS`` counts the address space onnxruntime and glibc reserve but never touch (20 sessions:
+800 MiB of address space for +20 MiB resident) and libgomp *exits the process* when it cannot
map a thread stack; a forked build process hangs in torch's OpenMP pool (libgomp is not fork
safe) unless torch runs single-threaded there; an RSS watchdog polls, and a fast allocation
passes it between two polls.

Linux only: elsewhere the budget is recorded but not enforced.
"""

from __future__ import annotations

import contextlib
import errno
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from autotune._util import error_line
from autotune.errors import CandidateError, UserError

#: the default budget: a share of the memory the machine has available when the search starts
DEFAULT_MAX_MEMORY = "80%"
#: what the search process must keep free under its budget beyond what it holds at the start
MIN_HEADROOM = 64 << 20
#: how an out-of-memory error reads where it is not a MemoryError (lower case)
_ALLOCATION_FAILED = (
    "can't allocate memory",  # torch's CPU allocator
    "failed to allocate memory",  # onnxruntime's arena
    "unable to allocate",  # numpy, through a wrapper that re-raised it
    "bad_alloc",  # C++ new, in a message
    "cannot allocate memory",  # ENOMEM in a message (mmap, fork, onnxruntime's pthread_create)
    "can't start new thread",  # Python's threading: no room left for the thread's stack
)
_CUDA = re.compile(r"\bcuda\b", re.IGNORECASE)  # GPU memory is not the search process's budget
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 10**3,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 10**6,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 10**9,
    "t": 1 << 40,
    "tib": 1 << 40,
    "tb": 10**12,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")
ACCEPTED = "a size (8GiB, 512MiB, 16GB) or a share of the available memory (50%)"


@dataclass(frozen=True)
class MemorySpec:
    """``--max-memory`` as given: bytes, or a share of the memory available at the start."""

    text: str
    bytes: int | None = None
    fraction: float | None = None


@dataclass(frozen=True)
class MemoryBudget:
    """The budget of one search, resolved when it starts."""

    bytes: int
    label: str  # as the user reads it: "1.5 GiB", or "80% of available: 15.1 GiB"
    enforced: bool  # False off Linux: recorded, not enforced
    held_bytes: int = 0  # what the search process held when the search started

    def to_dict(self) -> dict[str, object]:
        return {
            "bytes": self.bytes,
            "label": self.label,
            "enforced": self.enforced,
            "held_at_start": self.held_bytes,
            "mechanism": "RLIMIT_DATA" if self.enforced else "none",
        }


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``640 MiB``: binary units, as the budget is given."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def parse_max_memory(value: str | float | None) -> MemorySpec:
    """``"8GiB"``, ``"512MiB"``, ``"16GB"``, ``"50%"``, a number of bytes, or None (the default)."""
    if value is None:
        value = DEFAULT_MAX_MEMORY
    if isinstance(value, bool):
        raise UserError(f"--max-memory {value!r}: give {ACCEPTED}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise UserError(f"--max-memory {value}: must be more than zero")
        return MemorySpec(str(value), bytes=int(value))
    text = str(value).strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            raise UserError(f"--max-memory {text!r}: give {ACCEPTED}") from None
        if not 0 < share <= 100:
            raise UserError(f"--max-memory {text!r}: a share must be above 0% and at most 100%")
        return MemorySpec(text, fraction=share / 100)
    m = _SIZE.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise UserError(f"--max-memory {text!r}: give {ACCEPTED}")
    size = int(float(m.group(1)) * _UNITS[unit])
    if size <= 0:
        raise UserError(f"--max-memory {text!r}: must be more than zero")
    return MemorySpec(text, bytes=size)


def enforceable() -> bool:
    return sys.platform.startswith("linux")


def _status(field: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (``VmData``, ``VmHWM``, ``VmRSS``); None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def data_bytes() -> int:
    """What the limit counts of this process now: its private writable memory (``VmData``); the
    resident set where that is not known."""
    held = _status("VmData")
    if held is None:
        import psutil

        held = int(psutil.Process().memory_info().rss)
    return held


def resolve(spec: MemorySpec) -> MemoryBudget:
    """The budget in bytes: a share is of the memory available now, on top of what the search
    process already holds (its libraries and the model are part of the search)."""
    import psutil

    held = data_bytes()
    if spec.fraction is not None:
        available = int(psutil.virtual_memory().available)
        size = held + int(spec.fraction * available)
        label = f"{spec.text} of available: {format_bytes(size)}"
    else:
        assert spec.bytes is not None
        size, label = spec.bytes, format_bytes(spec.bytes)
    if size < held + MIN_HEADROOM:
        raise UserError(
            f"--max-memory {spec.text}: the search process already holds {format_bytes(held)} "
            "(its libraries and the model) before building any candidate; give more than that"
        )
    return MemoryBudget(size, label, enforceable(), held)


_active: MemoryBudget | None = None  # the budget of the search running in this process


def active() -> MemoryBudget | None:
    return _active


def headroom() -> int | None:
    """Bytes this process may still allocate under the active budget; None without one."""
    if _active is None:
        return None
    return max(0, _active.bytes - data_bytes())


@contextlib.contextmanager
def memory_limit(budget: MemoryBudget) -> Iterator[MemoryBudget]:
    """Enforce ``budget`` on this process for the block (``RLIMIT_DATA``'s soft limit; a lower
    limit already in place stays), then restore the previous limit."""
    global _active
    previous = _active
    if not budget.enforced:
        _active = budget
        try:
            yield budget
        finally:
            _active = previous
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = budget.bytes
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    _active = budget
    try:
        yield budget
    finally:
        _active = previous
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def is_memory_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it came from) is a failed host memory allocation."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, MemoryError):
            return True
        if isinstance(cur, OSError) and cur.errno == errno.ENOMEM:
            return True
        text = str(cur).lower()
        if any(s in text for s in _ALLOCATION_FAILED) and not _CUDA.search(text):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def memory_failure(step: str, exc: BaseException) -> CandidateError | None:
    """The candidate failure an out-of-memory error in ``step`` is (stage ``memory``), or None
    when ``exc`` is not one."""
    if not is_memory_error(exc):
        return None
    budget = _active
    detail = error_line(exc, 200)
    if budget is not None and budget.enforced:
        return CandidateError("memory", f"{step} needed more than the {budget.label} budget ({detail})")
    return CandidateError("memory", f"{step} ran out of memory ({detail})")


class PeakMeter:
    """Peak resident memory of this process over a block: the kernel's high-water mark, reset at
    the start (``/proc/self/clear_refs``); elsewhere, the resident set sampled every 20 ms."""

    INTERVAL_S = 0.02

    def __init__(self) -> None:
        self.bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exact = False

    def __enter__(self) -> PeakMeter:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")  # 5: reset the peak resident set size to the current one
            self._exact = _status("VmHWM") is not None
        except OSError:
            self._exact = False
        if not self._exact:
            self._thread = threading.Thread(target=self._sample, name="autotune-peak", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        import psutil

        process = psutil.Process()
        while True:
            rss = int(process.memory_info().rss)
            self.bytes = max(self.bytes or 0, rss)
            if self._stop.wait(self.INTERVAL_S):
                return

    def __exit__(self, *exc: object) -> None:
        if self._exact:
            self.bytes = _status("VmHWM")
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
