"""The pieces a shared study stands on, without a database server (issue 24): the artifact
store (content-addressed, atomic, checked on fetch, listed by optuna.artifacts), the storage's
reconnect back-off and its one-line give-up, the exact-count slots, the re-entrant device lock,
and ``autotune worker`` / a joining search refusing what does not match the study."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc

from autotune.devices import device_lock
from autotune.errors import UserError
from autotune.measure import MeasurementCache
from autotune.records import Measurement
from autotune.study import (
    MEASUREMENTS_PREFIX,
    SearchConfig,
    StorageUnavailable,
    Store,
    StudySettings,
    open_storage,
    surplus,
)
from autotune.study._storage import ResilientStorage

TESTS = Path(__file__).parent


def test_one_artifact_stored_once_fetched_checked_and_listed(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", create=True)
    src = tmp_path / "a.onnx"
    src.write_bytes(b"model bytes")
    from autotune._util import sha256_file

    sha = sha256_file(src)
    assert store.put_file(src, f"{sha}.onnx") is True
    assert store.put_file(src, f"{sha}.onnx") is False  # content-addressed: stored once
    assert store.put_onnx(src, sha) == f"{sha}.onnx"
    assert [p.name for p in (tmp_path / "store").iterdir()] == [f"{sha}.onnx"]  # no temp files left
    out = store.fetch(f"{sha}.onnx", tmp_path / "out" / "b.onnx", sha)
    assert out.read_bytes() == b"model bytes"
    (tmp_path / "store" / f"{sha}.onnx").write_bytes(b"truncated")
    with pytest.raises(UserError, match="corrupt"):
        store.fetch(f"{sha}.onnx", tmp_path / "out" / "c.onnx", sha)
    assert not (tmp_path / "out" / "c.onnx").exists()
    with pytest.raises(UserError, match="not in the artifact store"):
        store.fetch("missing.onnx", tmp_path / "out" / "d.onnx")

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    trial = study.ask()
    store.link(trial, f"{sha}.onnx", f"trial{trial.number}.onnx", "application/octet-stream")
    (tmp_path / "t.txt").write_text("Traceback ...")
    store.upload(trial, tmp_path / "t.txt")
    names = {m.filename for m in optuna.artifacts.get_all_artifact_meta(trial)}
    assert names == {"trial0.onnx", "t.txt"}
    frozen = study.trials[0]
    assert Store.find(frozen, study._storage, ".onnx") == f"{sha}.onnx"


def test_a_joining_worker_is_told_when_the_store_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a directory on this machine"):
        Store(tmp_path / "not-mounted")
    with pytest.raises(UserError, match="use a directory"):
        Store("http://example.invalid/x")


def test_the_measurement_cache_in_a_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", create=True)
    cache = MeasurementCache(store=store.store, prefix=MEASUREMENTS_PREFIX)
    assert cache.get("k") is None
    cache.put("k", {"artifact": "x"}, Measurement(status="ok", backend="ort-cpu", n=3, median_ms=1.0))
    hit = cache.get("k")
    assert hit is not None and hit.cached and hit.median_ms == 1.0
    assert (tmp_path / "store" / "measurements" / "k.json").is_file()


class _Flaky:
    """A storage backend whose calls fail ``fails`` times with a dropped connection."""

    def __init__(self, fails: int) -> None:
        self.fails, self.calls = fails, 0

    def get_all_studies(self) -> list[Any]:
        self.calls += 1
        if self.calls <= self.fails:
            raise sqlalchemy.exc.OperationalError(
                "SELECT 1", {}, ConnectionRefusedError("connection refused")
            )
        return []

    def record_heartbeat(self, trial_id: int) -> None:
        raise sqlalchemy.exc.OperationalError("UPDATE", {}, ConnectionRefusedError("connection refused"))


def test_a_lost_connection_is_retried_with_back_off_then_given_up_in_one_line() -> None:
    flaky = _Flaky(fails=2)
    storage = ResilientStorage(flaky, "postgresql+psycopg://u:secret@db/x", reconnect_s=30)  # type: ignore[arg-type]
    t0 = time.monotonic()
    assert storage.get_all_studies() == []
    assert flaky.calls == 3 and storage.reconnects == 1
    assert 1.0 <= time.monotonic() - t0 < 5  # 0.5 s, then 1 s
    storage.record_heartbeat(1)  # a missed heartbeat is no error

    down = ResilientStorage(_Flaky(fails=10**6), "postgresql+psycopg://u:secret@db/x", reconnect_s=1.2)  # type: ignore[arg-type]
    with pytest.raises(StorageUnavailable) as info:
        down.get_all_studies()
    message = str(info.value)
    assert "\n" not in message and "lost the study's database" in message
    assert "secret" not in message  # no password in the line
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable):
        down.get_all_studies()  # on its way out: no second wait
    assert time.monotonic() - t0 < 0.5


def test_a_storage_that_never_answers_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot open"):
        open_storage("postgresql+psycopg://postgres@127.0.0.1:9/none", reconnect_s=1)


def test_a_trial_past_the_target_is_surplus() -> None:
    study = optuna.create_study()
    for _ in range(3):
        study.enqueue_trial({})
    first = study.ask()  # pops queued trial 0; trials 1, 2 still queued
    assert not surplus(study, first.number, target=3)
    extra = study.ask()  # trial 1 (queued)
    extra2 = study.ask()  # trial 2 (queued)
    fourth = study.ask()  # a new trial 3: 0, 1, 2 hold every slot
    assert not surplus(study, extra.number, 3) and not surplus(study, extra2.number, 3)
    assert surplus(study, fourth.number, target=3)


def test_the_device_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTUNE_LOCK_DIR", str(tmp_path))
    order: list[str] = []

    def other() -> None:
        with device_lock("dev"):
            order.append("other")

    with device_lock("dev"), device_lock("dev"):  # the measurer, then the device inside it
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.3)
        order.append("main")
    thread.join(timeout=10)
    assert order == ["main", "other"]


def _settings(tmp_path: Path, **change: Any) -> StudySettings:
    cfg = SearchConfig(budget="50ms", trials=4, task_ref="tiny_tasks:conv_task")
    s = StudySettings.from_config(cfg, {"ref": "tiny_tasks:conv_task"}, (tmp_path / "store").as_uri(), False)
    for k, v in change.items():
        setattr(s, k, v)
    return s


def test_settings_name_every_difference(tmp_path: Path) -> None:
    study_settings = _settings(tmp_path)
    mine = _settings(tmp_path, seed=1, sampler="random", trials=99)
    diffs = study_settings.differences(mine)
    assert diffs == ["seed 0 (this worker: 1)", "sampler 'auto' (this worker: 'random')"]  # trials may grow


def _cli(args: list[str], cwd: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath)), "AUTOTUNE_LOCK_DIR": str(cwd)}
    return subprocess.run(
        [sys.executable, "-m", "autotune", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_worker_that_cannot_load_the_task_says_so_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    (tmp_path / "store").mkdir()
    _settings(tmp_path).save(study)
    # tests/ is not on this worker's path: tiny_tasks does not import
    done = _cli(["worker", "--storage", url, "--study", "s"], tmp_path, [TESTS.parent])
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert (
        done.stderr.startswith("autotune: error: cannot load the study's task")
        and "tiny_tasks" in done.stderr
    )


def test_a_worker_for_a_study_that_is_not_there(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="other", storage=url)
    done = _cli(["worker", "--storage", url, "--study", "s"], tmp_path, [TESTS.parent])
    assert done.returncode == 2 and "no such study" in done.stderr and "found: other" in done.stderr


def test_a_search_joining_with_other_settings_is_refused_naming_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize", "minimize"])
    (tmp_path / "store").mkdir()
    _settings(tmp_path).save(study)
    args = ["--model", "tiny_tasks:conv_task", "--budget", "50ms", "--trials", "4", "--quick", "--seed", "3"]
    done = _cli([*args, "--storage", url, "--study", "s", "--no-progress"], tmp_path, [TESTS.parent, TESTS])
    assert done.returncode == 2, done.stderr
    assert "study 's' was created with other settings: seed 0 (this worker: 3)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_silent_trial_is_failed_by_the_heartbeat_and_retried_once(tmp_path: Path) -> None:
    """What a ``kill -9`` leaves behind (a RUNNING trial whose heartbeats stopped), without the
    processes: tests/test_distributed.py kills a real worker."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=1)  # stale after 4 s
    study = optuna.create_study(storage=storage)
    x = optuna.distributions.FloatDistribution(0, 1)
    killed = study.ask({"x": x})
    killed.set_user_attr("config", {"layers": {}})
    storage.record_heartbeat(killed._trial_id)  # one beat, then its worker is gone
    time.sleep(5)
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL
    retry = trials[1]
    assert retry.state == optuna.trial.TrialState.WAITING and retry.system_attrs["failed_trial"] == 0
    assert retry.params == trials[0].params and retry.user_attrs == {"config": {"layers": {}}}
    again = study.ask()  # a worker takes the retry, and dies too: no third try
    assert again.number == retry.number
    storage.record_heartbeat(again._trial_id)
    time.sleep(5)
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL] * 2


def test_an_s3_store_through_boto3(tmp_path: Path) -> None:
    """``--artifacts s3://bucket/prefix`` on Optuna's Boto3ArtifactStore, against moto's in-process
    S3 (no network). boto3 is the optional ``s3`` extra; without it and moto this is skipped."""
    pytest.importorskip("boto3", reason="boto3 not installed (pip install 'autotune-hw[s3]')")
    moto = pytest.importorskip("moto", reason="moto not installed: no local S3 to test against")
    import boto3

    with moto.mock_aws():
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        boto3.client("s3").create_bucket(Bucket="models")
        store = Store("s3://models/autotune")
        src = tmp_path / "a.onnx"
        src.write_bytes(b"bytes")
        from autotune._util import sha256_file

        sha = sha256_file(src)
        assert store.put_file(src, f"{sha}.onnx") and not store.put_file(src, f"{sha}.onnx")
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="models")["Contents"]]
        assert keys == [f"autotune/{sha}.onnx"]
        assert store.fetch(f"{sha}.onnx", tmp_path / "b.onnx", sha).read_bytes() == b"bytes"


def test_an_onnx_task_travels_through_the_store(tmp_path: Path) -> None:
    """``--model file.onnx --data x.npz``: the creator puts both in the store by sha256; a worker
    elsewhere fetches them (checked) and loads the same task."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from autotune.commands.worker import _load
    from autotune.tune._join import _task_entry

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    creator = tmp_path / "creator"
    creator.mkdir()
    onnx.save(model, creator / "net.onnx")
    np.savez(creator / "data.npz", x=np.ones((8, 4), np.float32), labels=np.zeros(8, np.int64))
    store = Store(tmp_path / "store", create=True)
    cfg = SearchConfig(budget="50ms", task_ref=str(creator / "net.onnx"), task_data=str(creator / "data.npz"))
    entry = _task_entry(cfg, store)
    assert entry["onnx"]["name"] == "net.onnx" and entry["data"]["name"] == "data.npz"
    settings = StudySettings.from_config(cfg, entry, store.url, shared=True)
    (creator / "net.onnx").unlink()  # the worker has only the store
    worker_cfg = settings.to_config(tmp_path / "worker" / "s", study_name="s")
    task = _load(settings, worker_cfg, tmp_path / "worker" / "s")
    assert task.name and (tmp_path / "worker" / "s" / ".settings" / "task" / "net.onnx").is_file()
    # the device profile and space travel as YAML and load under their own names
    from autotune.space import load_preset, load_profile

    assert load_profile(worker_cfg.device).name == "cpu"
    load_preset(worker_cfg.space)
