"""A study shared by workers: create it or join it, settle its settings and artifact store, and
put each trial's files there (docs/distributed.md)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import optuna

from autotune._util import error_line, sha256_file
from autotune.build import Artifact
from autotune.errors import UserError
from autotune.result import TrialResult
from autotune.study import (
    EXPORT_SUFFIX,
    MEASUREMENTS_PREFIX,
    TRACEBACK_SUFFIX,
    RunMeta,
    SearchConfig,
    Store,
    StudySettings,
    normalize_url,
    refuse,
)

#: how long a joining worker waits for the creator of a brand-new study to record its settings
SETTINGS_WAIT_S = 30.0


def open_study(name: str, storage: optuna.storages.BaseStorage, sampler: Any) -> tuple[optuna.Study, bool]:
    """The study, and whether this call created it (then this worker records the settings)."""
    directions: list[Literal["minimize", "maximize"]] = ["maximize", "minimize", "minimize"]
    try:
        return optuna.create_study(
            study_name=name, storage=storage, directions=directions, sampler=sampler
        ), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler), False


def _task_entry(cfg: SearchConfig, store: Store | None) -> dict[str, Any]:
    """How a worker loads the task; an ONNX task's files go to the store (``store``: creating)."""
    ref = cfg.task_ref
    if ref is None:
        return {}
    if not ref.endswith(".onnx"):
        return {"ref": ref}
    entry: dict[str, Any] = {"onnx": None, "data": None}
    for key, path in (("onnx", ref), ("data", cfg.task_data)):
        if path is None:
            continue
        sha = sha256_file(path)
        entry[key] = {"sha256": sha, "name": Path(path).name, "id": f"tasks/{sha}{Path(path).suffix}"}
        if store is not None:
            store.put_file(Path(path), entry[key]["id"])
    return entry


def _wait_for_settings(study: optuna.Study) -> StudySettings | None:
    """A study created a moment ago by another worker: its settings follow at once."""
    deadline = time.monotonic() + SETTINGS_WAIT_S
    while time.monotonic() < deadline:
        found = StudySettings.from_study(study)
        if found is not None or RunMeta.from_study(study) is not None or study.trials:
            return found  # settings, or an older study that never had any
        time.sleep(0.5)
        study = optuna.load_study(study_name=study.study_name, storage=study._storage)
    return None


def settle(
    study: optuna.Study, created: bool, cfg: SearchConfig, run_dir: Path, given: StudySettings | None
) -> tuple[StudySettings, Store]:
    """The study's settings (recorded now by its creator, compared for a joining search, taken as
    they are by ``autotune worker``: ``given``) and its artifact store."""
    if given is not None:
        settings = given
    else:
        existing = StudySettings.from_study(study)
        if existing is None and not created:
            existing = _wait_for_settings(study)
        if existing is None:
            url = normalize_url(cfg.artifacts or run_dir / "artifacts")
            store = Store(url, create=True)
            settings = StudySettings.from_config(
                cfg, _task_entry(cfg, store), url, shared=cfg.artifacts is not None
            )
            settings.save(study)
        else:
            mine = StudySettings.from_config(cfg, _task_entry(cfg, None), existing.artifacts, shared=False)
            diffs = existing.differences(mine)
            if diffs:
                raise refuse(study.study_name, diffs)
            settings = existing
            if cfg.trials > settings.trials:  # a resumed study continues to the new count
                settings.trials = cfg.trials
                settings.save(study)
    return settings, Store(cfg.artifacts or settings.artifacts)


def measurement_store(settings: StudySettings, store: Store) -> tuple[Any, str] | None:
    """(store, prefix) for the measurement cache when the study shares it through its store."""
    return (store.store, MEASUREMENTS_PREFIX) if settings.measurements == "store" else None


class TrialFiles:
    """Puts each trial's files in the study's store; a store that stays unreachable after
    Optuna's back-off stops the worker with one line (a trial nobody can export is worth little)."""

    def __init__(self, store: Store, run_dir: Path) -> None:
        self.store = store
        self.run_dir = run_dir

    def _guard(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise UserError(
                f"artifact store {self.store.url}: cannot store {what} ({error_line(exc)})"
            ) from None

    def onnx(self, trial: optuna.Trial, artifact: Artifact) -> None:
        artifact_id = self._guard("the ONNX file", self.store.put_onnx, artifact.path, artifact.sha256)
        self.store.link(trial, artifact_id, f"trial{trial.number}.onnx", "application/octet-stream")

    def traceback(self, trial: optuna.Trial, path: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            named = Path(tmp) / f"trial{trial.number}{TRACEBACK_SUFFIX}"
            named.write_bytes(path.read_bytes())
            self._guard("a traceback", self.store.upload, trial, named)

    def export_json(self, trial: optuna.Trial, result: TrialResult) -> None:
        """The export JSON, as ``autotune export`` writes it; uploaded before the trial is told
        (Optuna links no file to a finished trial)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial{trial.number}{EXPORT_SUFFIX}"
            path.write_text(_json(result.export_info()), encoding="utf-8")
            self._guard("an export JSON", self.store.upload, trial, path)


def _json(info: dict[str, Any]) -> str:
    import json

    return json.dumps(info, indent=2, default=str)
