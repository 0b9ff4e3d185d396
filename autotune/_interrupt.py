"""Ctrl-C that never lands inside Optuna's own bookkeeping.

Python raises KeyboardInterrupt at whatever bytecode the main thread is running. Two places in
Optuna 5 do not survive it:

* its RDB storage (SQLAlchemy over SQLite): an interrupt inside a transaction's clean-up can leave
  the main thread's connection holding the database's write lock; Optuna then joins the trial's
  heartbeat thread, whose next write waits out the lock timeout (60 s) before the user gets the
  prompt back;
* ``_run_trial`` recording a trial's outcome: an interrupt inside that storage write surfaces as
  ``UnboundLocalError: ... 'updated_state'`` (its ``finally`` reads a variable never assigned),
  a traceback instead of a clean stop.

:func:`interrupts_outside_optuna` installs a SIGINT handler that decides by the innermost frame
owned by either side: our code (a candidate being compressed, measured or evaluated, with the
torch / onnxruntime calls it makes) is interrupted at once; Optuna's or SQLAlchemy's is left to
finish, and the interrupt is delivered again a moment later.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

#: modules whose code is left to finish before the interrupt lands
BOOKKEEPING_MODULES = ("optuna", "sqlalchemy")
#: modules whose code is interrupted at once
OUR_MODULES = ("autotune",)
#: how long to wait before delivering a deferred interrupt again
RETRY_S = 0.05


def in_bookkeeping(frame: FrameType | None) -> bool:
    """Whether the innermost frame of ours or of :data:`BOOKKEEPING_MODULES`, from ``frame``
    outwards, is bookkeeping (other libraries' frames belong to whoever called them)."""
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith(OUR_MODULES):
            return False
        if module.startswith(BOOKKEEPING_MODULES):
            return True
        frame = frame.f_back
    return False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if in_bookkeeping(frame):
        timer = threading.Timer(RETRY_S, _thread.interrupt_main)  # calls this handler again
        timer.daemon = True
        timer.start()
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_outside_optuna() -> Iterator[None]:
    """Within the block, Ctrl-C waits for Optuna's bookkeeping in progress to finish. A no-op off
    the main thread (signal handlers can only be set there) or where SIGINT was not the default
    KeyboardInterrupt (the embedding program handles it)."""
    usable = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if usable else None
    if previous is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
