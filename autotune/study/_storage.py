"""The study's database, opened the way a distributed study needs it.

* **Heartbeats** (Optuna's own): every running trial records one every ``heartbeat`` seconds;
  a trial silent for four intervals (its worker was killed) is failed by the next worker that
  starts a trial, and :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` queues it once
  more (``max_retry=1``: a candidate that kills its worker twice is not tried a third time).
* **A lost connection is retried with back-off** (:class:`ResilientStorage`): a database
  restarting, a network blip. Past ``reconnect_s`` the worker stops with one line
  (:class:`StorageUnavailable`); what was committed stays committed, so completed trials are
  never lost, and a restarted worker goes on.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages import _CachedStorage as CachedStorage  # what optuna.create_study wraps an RDB in

# Optuna runs heartbeats only for a storage that is a BaseHeartbeat (is_heartbeat_enabled)
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autotune._util import error_line
from autotune.errors import UserError

if TYPE_CHECKING:
    from optuna.study._frozen import FrozenStudy

T = TypeVar("T")

#: default seconds between a running trial's heartbeats; a trial is stale after GRACE_FACTOR of them
HEARTBEAT_S = 30
GRACE_FACTOR = 4
#: default seconds a worker keeps trying to reach a database that went away
RECONNECT_S = 120.0


class StorageUnavailable(UserError):
    """The database stayed out of reach for the whole reconnect window (one line, exit 2)."""


def transient(exc: BaseException) -> bool:
    """A connection-level failure worth retrying (not bad data, not a finished trial)."""
    import sqlalchemy.exc as sa

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError, sa.TimeoutError)):
            return True
        if isinstance(cur, sa.DBAPIError) and cur.connection_invalidated:
            return True
        if isinstance(cur, (ConnectionError, TimeoutError)):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def lost(exc: BaseException) -> StorageUnavailable | None:
    """The :class:`StorageUnavailable` behind ``exc``: Optuna's trial loop may raise another error
    while cleaning up after it (it reads the trial back from the same lost database)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, StorageUnavailable):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def open_storage(
    url: str, heartbeat: int = HEARTBEAT_S, reconnect_s: float = RECONNECT_S
) -> ResilientStorage:
    """Open ``url`` (SQLite or a server database) with heartbeats, retries and back-off."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        # check a pooled connection before use: after a database restart every one is dead
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    with warnings.catch_warnings():  # both are "experimental" in Optuna 5, and what it recommends
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _open(url, heartbeat, reconnect_s, kwargs)


def _open(url: str, heartbeat: int, reconnect_s: float, kwargs: dict[str, Any]) -> ResilientStorage:
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    deadline = time.monotonic() + reconnect_s
    for attempt in range(1000):
        try:
            rdb = RDBStorage(
                url,
                heartbeat_interval=heartbeat,
                grace_period=GRACE_FACTOR * heartbeat,
                heartbeat_stale_trial_callback=retry,
                **kwargs,
            )
            return ResilientStorage(CachedStorage(rdb), url, reconnect_s)
        except Exception as exc:  # noqa: BLE001
            # workers starting together race to create the schema: the loser retries; a server
            # still starting is waited for like a lost one
            racing = "duplicate" in str(exc).lower() and attempt < 5
            if not racing and not (transient(exc) and time.monotonic() < deadline):
                raise UserError(f"--storage {_safe(url)}: cannot open ({error_line(exc)})") from None
            time.sleep(min(0.5 * 2**attempt, 10.0))
    raise AssertionError("unreachable")


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{tail}"


class ResilientStorage(BaseStorage, BaseHeartbeat):
    """An Optuna storage that retries connection failures with exponential back-off.

    Every call goes to ``backend``; one that fails for a connection reason is tried again after
    0.5, 1, 2, 4, 8, 10, 10 ... s until ``reconnect_s`` have passed, then
    :class:`StorageUnavailable` is raised, and every later call fails at once (the worker is
    on its way out). A retried state change that had in fact been committed before the
    connection dropped is recognised, not failed. Heartbeats are never retried: a missed one
    is harmless, a blocked one would hold the trial.
    """

    def __init__(self, backend: CachedStorage, url: str, reconnect_s: float) -> None:
        self.backend = backend
        self.url = url
        self.reconnect_s = reconnect_s
        self.lost: StorageUnavailable | None = None
        self.reconnects = 0  # how many outages were ridden out

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.lost is not None:
            raise self.lost
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not transient(exc):
                    raise
                waited = time.monotonic() - start
                if waited >= self.reconnect_s:
                    self.lost = StorageUnavailable(
                        f"lost the study's database {_safe(self.url)}: no connection for "
                        f"{waited:.0f} s ({error_line(exc, 200)}); completed trials are saved, start "
                        "the worker again once the database is back"
                    )
                    raise self.lost from None
                time.sleep(min(0.5 * 2**attempt, 10.0, self.reconnect_s - waited + 0.01))
                attempt += 1
                continue
            if attempt:
                self.reconnects += 1
            return result

    # -- studies ---------------------------------------------------------------------------------
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._call(self.backend.create_new_study, directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._call(self.backend.delete_study, study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(self.backend.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(self.backend.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call(self.backend.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call(self.backend.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._call(self.backend.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(self.backend.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(self.backend.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._call(self.backend.get_all_studies)

    # -- trials ----------------------------------------------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._call(self.backend.create_new_trial, study_id, template_trial)

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: Any
    ) -> None:
        self._call(self.backend.set_trial_param, trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._call(self.backend.get_trial_id_from_study_id_trial_number, study_id, trial_number)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        tries = [0]

        def attempt() -> bool:
            tries[0] += 1
            try:
                return self.backend.set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                # a retry of a change the database had committed before the connection dropped
                if tries[0] > 1 and state.is_finished() and self.backend.get_trial(trial_id).state == state:
                    return True
                raise

        return self._call(attempt)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._call(self.backend.set_trial_intermediate_value, trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(self.backend.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(self.backend.set_trial_system_attr, trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call(self.backend.get_trial, trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._call(self.backend.get_all_trials, study_id, deepcopy, states)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call(self.backend.get_best_trial, study_id)

    def remove_session(self) -> None:
        self.backend.remove_session()

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self.backend.check_trial_is_updatable(trial_id, trial_state)

    # -- heartbeats ------------------------------------------------------------------------------
    def record_heartbeat(self, trial_id: int) -> None:
        if self.lost is not None:
            return
        try:
            self.backend.record_heartbeat(trial_id)
        except Exception as exc:
            if not transient(exc):
                raise

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self._call(self.backend._get_stale_trial_ids, study_id)

    def get_heartbeat_interval(self) -> int | None:
        return self.backend.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.backend.get_heartbeat_stale_trial_callback()
