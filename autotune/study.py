"""The search: an Optuna study whose trials build, measure and score candidates.

Objectives: accuracy (max), latency median (min), size in bytes (min); one constraint,
``latency - budget <= 0``, set with ``trial.set_constraint``. Baselines are enqueued first.
Re-running with the same study name resumes and continues to the requested trial count.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from autotune import __version__
from autotune._util import error_line
from autotune.artifact import ArtifactBuilder
from autotune.budget import format_ms
from autotune.config import SearchConfig
from autotune.devices import Device, Reference, device_for_profile
from autotune.errors import CandidateError, UserError
from autotune.evaluate import evaluate_artifact
from autotune.measure import Measurer, confirm
from autotune.onnx_export import input_names
from autotune.profiles import DeviceProfile, load_profile
from autotune.result import ParetoSet
from autotune.run import DB_NAME, FAILURES_DIR, RunMeta, TrialRecord
from autotune.space import Candidate, SearchSpace, build_space, load_preset
from autotune.task import Task

__all__ = ["SearchConfig", "run_search"]  # SearchConfig lives in config.py, re-exported for callers


def _trial_inputs(task: Task) -> dict[str, np.ndarray]:
    names = input_names(len(task.example_inputs))
    return {
        n: t.detach().cpu().numpy().astype(np.float32)
        for n, t in zip(names, task.example_inputs, strict=True)
    }


def _storage(url: str) -> optuna.storages.BaseStorage:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    # heartbeats let a later run mark trials of a killed worker FAILED instead of RUNNING forever
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120, **kwargs)
        except Exception as exc:  # noqa: BLE001
            # workers starting together race to create the schema: the loser retries
            if attempt == 4 or "duplicate" not in str(exc).lower():
                raise UserError(f"--storage {url}: cannot open ({error_line(exc)})") from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _counted(study: optuna.Study) -> int:
    """Trials that count toward the requested number: completed, or failed by the candidate."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE
        or (t.state == TrialState.FAIL and TrialRecord.from_attrs(t.user_attrs).failed_by_candidate)
    )


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """For the search only: no Optuna log line per failed trial (the summary groups the reasons
    and failures/<trial>.txt keeps each traceback) and no experimental-feature warnings."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _save_traceback(run_dir: Path, number: int, exc: BaseException) -> str:
    """Write a failed candidate's full traceback; returns its path relative to the run directory."""
    rel = Path(FAILURES_DIR) / f"{number}.txt"
    (run_dir / rel).parent.mkdir(exist_ok=True)
    (run_dir / rel).write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    return rel.as_posix()


def run_search(task: Task, cfg: SearchConfig) -> ParetoSet:
    with _quiet_optuna():
        return _search(task, cfg)


def _search(task: Task, cfg: SearchConfig) -> ParetoSet:
    budget_ms = cfg.budget_ms
    profile = load_profile(cfg.device)
    device = device_for_profile(profile, agent=cfg.agent)
    preset = load_preset(cfg.space)
    study_name = cfg.study_name or f"{task.name}-{profile.name}-{format_ms(budget_ms)}"
    run_dir = Path(cfg.out_dir) / study_name
    run_dir.mkdir(parents=True, exist_ok=True)

    storage_url = cfg.storage or f"sqlite:///{run_dir / DB_NAME}"
    storage = _storage(storage_url)
    space = build_space(task, preset, profile, threads=cfg.threads)
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True, n_startup_trials=10)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        directions=["maximize", "minimize", "minimize"],
        sampler=sampler,
        load_if_exists=True,
    )
    meta = _check_or_write_meta(study, task, profile, device, budget_ms, cfg, space, run_dir)
    # a resumed study gets a different sampler stream, so it does not replay the same proposals
    if study.trials:
        sampler.reseed_rng()
    _enqueue_baselines(study, space)

    builder = ArtifactBuilder(task, space, run_dir / "artifacts")
    inputs = _trial_inputs(task)
    # every candidate is timed interleaved with the unmodified model (README, "Measurement")
    try:
        reference = builder.build(Candidate(layers={}))
    except CandidateError as exc:
        raise UserError(f"the unmodified model (the latency reference) does not build: {exc}") from None
    measurer = Measurer(
        device,
        cfg.protocol,
        cache_dir=run_dir / "measurements",
        remeasure=cfg.remeasure,
        reference=Reference(reference.path, inputs, reference.sha256),
    )

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        candidate = space.sample(trial)
        record = TrialRecord(candidate=candidate)
        record.save(trial)
        try:
            artifact = builder.build(candidate)
            timings = record.timings = artifact.timings
            record.artifact_path = str(artifact.path.relative_to(run_dir))
            record.sha256, record.size_bytes = artifact.sha256, artifact.size_bytes
            t0 = time.perf_counter()
            m = measurer.measure(artifact.path, inputs, candidate.runtime)
            timings["measure"] = time.perf_counter() - t0
            record.measurement = m
            if not m.usable:
                raise CandidateError("measure", f"{m.status}: {m.error}")
            t0 = time.perf_counter()
            try:
                accuracy = evaluate_artifact(task, artifact.path)
            except Exception as exc:
                raise CandidateError("evaluate", error_line(exc)) from exc
            finally:
                timings["evaluate"] = time.perf_counter() - t0
        except CandidateError as exc:
            record.fail_stage, record.fail_reason = exc.stage, str(exc)
            record.traceback = _save_traceback(run_dir, trial.number, exc)
            raise
        finally:
            record.save(trial)
        latency_ms = measurer.latency_ms(m, candidate.runtime)  # reference latency x ratio
        trial.set_constraint("latency_budget", latency_ms - budget_ms)
        return accuracy, latency_ms, float(artifact.size_bytes)

    def stop_at_target(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        # other workers on the same storage count too: stop once the study as a whole is done
        if _counted(study) >= cfg.trials:
            study.stop()

    remaining = cfg.trials - _counted(study)
    started = time.time()
    bar = _ProgressBar(remaining, budget_ms, cfg.progress)
    trial_stats: dict[str, Any] = {}
    try:
        while remaining > 0:
            study.optimize(
                objective, n_trials=remaining, catch=(CandidateError,), callbacks=[bar.update, stop_at_target]
            )
            remaining = cfg.trials - _counted(study)  # trials lost to a stale worker are redone
        # confirmation round: the candidates that decide the outcome, measured again for longer
        # (its measurements are counted apart from the trials')
        trial_stats = dict(measurer.stats)
        found = ParetoSet(study, run_dir, storage=storage_url)
        confirmed = confirm.run_round(found, measurer, inputs, budget_ms, cfg.protocol)
        study.set_user_attr(confirm.CONFIRMED_KEY, confirmed)
        trial_stats["confirmed"] = len(confirmed)
    finally:
        bar.close()
        meta.wall_s += time.time() - started
        meta.measurer = trial_stats or dict(measurer.stats)
        meta.save(study)
        device.close()
    result = ParetoSet(study, run_dir, storage=storage_url)
    if cfg.report is not False:
        result.report_path = result.report(None if cfg.report is True else cfg.report)
    return result


def _check_or_write_meta(
    study: optuna.Study,
    task: Task,
    profile: DeviceProfile,
    device: Device,
    budget_ms: float,
    cfg: SearchConfig,
    space: SearchSpace,
    run_dir: Path,
) -> RunMeta:
    meta = RunMeta.from_study(study)
    if meta is not None:
        for key, was, now in (
            ("task", meta.task, task.name),
            ("device", meta.device, profile.name),
            ("budget_ms", meta.budget_ms, budget_ms),
        ):
            if was != now:
                raise UserError(
                    f"study {study.study_name!r} was created with {key}={was!r}, not {now!r}; "
                    "pass a new --study name to start another search"
                )
        return meta
    meta = RunMeta(
        version=__version__,
        task=task.name,
        metric=task.metric,
        device=profile.name,
        backend=profile.backend,
        budget_ms=budget_ms,
        budget=format_ms(budget_ms),
        run_dir=str(run_dir.resolve()),
        fingerprint=device.fingerprint(),
        space=space.summary(),
        protocol=cfg.protocol.to_dict(),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(sys.argv),
    )
    meta.save(study)
    return meta


def _enqueue_baselines(study: optuna.Study, space: SearchSpace) -> None:
    done = set()
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.from_attrs(t.user_attrs)
        if t.state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING) or (
            t.state == TrialState.FAIL and record.failed_by_candidate
        ):
            done.add(record.baseline)
    for name, params in space.baselines().items():
        if name not in done:
            study.enqueue_trial(params, user_attrs=TrialRecord(baseline=name).to_attrs(), skip_if_exists=True)


class _ProgressBar:
    """tqdm bar with ETA and the best feasible candidate so far."""

    def __init__(self, total: int, budget_ms: float, enabled: bool) -> None:
        self.budget_ms = budget_ms
        self.bar = tqdm(
            total=max(total, 0), disable=not enabled, unit="trial", file=sys.stderr, dynamic_ncols=True
        )
        self.best: tuple[float, float] | None = None
        self.failed = 0

    def update(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            acc, lat, _ = trial.values
            if lat <= self.budget_ms and (self.best is None or (acc, -lat) > (self.best[0], -self.best[1])):
                self.best = (acc, lat)
        elif trial.state == TrialState.FAIL:
            self.failed += 1
        best = f"{self.best[0]:.2f} @ {self.best[1]:.3f}ms" if self.best else "none yet"
        self.bar.set_postfix_str(f"best under budget: {best}; failed {self.failed}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
