"""Ctrl-C delivered inside Optuna's SQLite bookkeeping: a clean KeyboardInterrupt, the database
unlocked, the completed trials kept (autotune/_interrupt.py).

SIGINT is raised for real (``signal.raise_signal``) from an SQLAlchemy event on the main thread,
at the N-th statement or commit of a search's trials, so each case lands at a known point inside
a transaction. Without the deferring handler, cases here ended in Optuna's
``UnboundLocalError: ... 'updated_state'`` or left the write lock held (the heartbeat thread then
waited out the lock timeout).
"""

import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from tiny_tasks import conv_task

import autotune
from autotune._interrupt import interrupts_outside_optuna
from autotune.devices import Protocol
from autotune.study._records import DB_NAME, RunMeta


class SigintAt:
    """Raises SIGINT on the main thread at the ``nth`` ``event`` of any engine, counted from the
    first statement that records a trial's values (the search is past its set-up)."""

    def __init__(self, event: str, nth: int) -> None:
        self.event, self.nth, self.count, self.armed, self.fired = event, nth, 0, False, False

    def arm(self, conn: object, cursor: object, statement: str, *args: object) -> None:
        self.armed = self.armed or statement.startswith("INSERT INTO trial_values")

    def __call__(self, *args: Any) -> None:
        if self.armed and not self.fired and threading.current_thread() is threading.main_thread():
            self.count += 1
            if self.count == self.nth:
                self.fired = True
                signal.raise_signal(signal.SIGINT)

    def __enter__(self) -> "SigintAt":
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", self.arm)
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, self.event, self)
        return self

    def __exit__(self, *exc: object) -> None:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, self.event, self)
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", self.arm)


@pytest.mark.parametrize(
    ("event", "nth"),
    [("after_cursor_execute", n) for n in (1, 3, 6, 10, 15, 22)] + [("commit", n) for n in (1, 3, 5, 8)],
)
def test_ctrl_c_inside_a_storage_transaction_stops_cleanly(tmp_path: Path, event: str, nth: int) -> None:
    task = conv_task()
    with SigintAt(event, nth) as sigint, pytest.raises(KeyboardInterrupt):
        autotune.search(
            task,
            budget="200%",
            trials=12,
            out_dir=tmp_path,
            study_name="cc",
            protocol=Protocol.quick(),
            progress=False,
            report=False,
            keep_going=True,
        )
    assert sigint.fired, "the search ended before the interrupt was delivered"
    with sqlite3.connect(tmp_path / "cc" / DB_NAME, timeout=0.5) as con:
        con.execute("BEGIN IMMEDIATE")  # the write lock is free: nothing was left holding it
        done = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    assert 1 <= done < 12
    study = optuna.load_study(study_name="cc", storage=f"sqlite:///{tmp_path / 'cc' / DB_NAME}")
    meta = RunMeta.from_study(study)
    assert meta is not None and meta.stopped == "interrupted" and meta.wall_s > 0  # the run is recorded
    assert meta.measurer.get("measured", 0) >= 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_the_handler_is_left_alone_off_the_main_thread_and_when_replaced() -> None:
    result: list[object] = []

    def worker() -> None:
        with interrupts_outside_optuna():
            result.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert result == [signal.default_int_handler]  # unchanged: only the main thread may set it

    def own(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGINT, own)
    try:
        with interrupts_outside_optuna():
            assert signal.getsignal(signal.SIGINT) is own  # an embedding program's handler stays
    finally:
        signal.signal(signal.SIGINT, previous)
