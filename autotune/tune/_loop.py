"""The search: an Optuna study whose trials build, measure and score candidates.

Objectives: accuracy (max), latency median (min), size in bytes (min); one constraint,
``latency - budget <= 0``, set with ``trial.set_constraint``. Baselines are enqueued first.
Re-running with the same study name resumes and continues to the requested trial count.
Several workers share a study through its storage (docs/distributed.md): :mod:`._join` creates
or joins it, and every trial's files go to the study's artifact store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import socket
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from autotune import __version__
from autotune._interrupt import interrupts_outside_optuna
from autotune._memory import MemoryBudget, PeakMeter, memory_failure, memory_limit, resolve
from autotune._util import error_line
from autotune.budget import format_ms
from autotune.build import FINAL_RECOVERY, Artifact, ArtifactBuilder, Recovery, recovery_batches
from autotune.devices import Device, device_for_profile
from autotune.devices import Reference as TimingReference
from autotune.errors import CandidateError, UserError
from autotune.measure import MeasurementCache, Measurer, confirm
from autotune.records import Measurement
from autotune.result import ParetoSet, TrialResult
from autotune.space import Candidate, DeviceProfile, SearchSpace, build_space, load_preset, load_profile
from autotune.study import (
    DB_NAME,
    FAILURES_DIR,
    FinalRecovery,
    ResilientStorage,
    RunMeta,
    SearchConfig,
    StorageUnavailable,
    StudyPredictor,
    StudySettings,
    TrialRecord,
    baseline_latencies,
    baselines_within,
    counted,
    enqueue_baselines,
    final_recovery,
    infeasible_message,
    lost,
    make_sampler,
    measure_reference,
    open_storage,
    recovery_of_final,
    save_confirmed,
    sensitivity_for_report,
    sensitivity_guidance,
    surplus,
    wait_for_slot,
)
from autotune.task import Task, evaluate_artifact
from autotune.tune._join import TrialFiles, measurement_store, open_study, settle
from autotune.tune._progress import Progress

__all__ = ["SearchConfig", "run_search"]  # SearchConfig lives in the study package, re-exported

#: the worker that runs a trial (:attr:`TrialRecord.worker`): host and process id
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _trial_inputs(task: Task) -> dict[str, np.ndarray]:
    """What every measurement is fed: the task's example inputs by ONNX input name, in their own
    dtypes (int64 token ids stay int64; the device feeds the names its model has)."""
    return task.example_feeds()


def _taken_over(exc: BaseException) -> bool:
    """Our running trial was failed by another worker's heartbeat check (this one was too slow
    to beat): Optuna cannot tell it, and the retry it queued redoes the candidate."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, optuna.exceptions.UpdateFinishedTrialError):
            return True
        if isinstance(cur, ValueError) and str(cur).startswith("Cannot tell a"):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


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


def _make_run_dir(run_dir: Path, out_dir: str | Path) -> None:
    """Create the run directory and check it takes files: one line, not a traceback, when
    ``--out`` is on a read-only filesystem or under a regular file."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as exc:
        why = exc.strerror or error_line(exc)
        raise UserError(f"--out {out_dir}: cannot write the run directory {run_dir}: {why}") from None


def run_search(task: Task, cfg: SearchConfig, settings: StudySettings | None = None) -> ParetoSet:
    """Run (or resume, or join) the search; ``settings``: a worker's, read from the study."""
    # Ctrl-C lands in our code, never inside Optuna's storage writes (a held SQLite lock, a traceback);
    # the memory budget holds for the whole search, the unmodified model's build included
    opened: list[ResilientStorage] = []
    with _quiet_optuna(), interrupts_outside_optuna(), memory_limit(resolve(cfg.memory_spec)) as memory:
        try:
            return _search(task, cfg, memory, settings, opened)
        except Exception as exc:
            # the database stayed away: one line, whatever Optuna raised while cleaning up after
            # it (its trial loop can end in an UnboundLocalError that hides the cause)
            gone = lost(exc) or next((s.lost for s in opened if s.lost is not None), None)
            if gone is not None and gone is not exc:
                raise gone from None
            raise


def _search(
    task: Task,
    cfg: SearchConfig,
    memory: MemoryBudget,
    given: StudySettings | None,
    opened: list[ResilientStorage],
) -> ParetoSet:
    profile = load_profile(cfg.device)
    preset = load_preset(cfg.space)
    study_name = cfg.study_name or f"{task.name}-{profile.name}-{cfg.budget_spec.slug}"
    run_dir = Path(cfg.out_dir) / study_name
    _make_run_dir(run_dir, cfg.out_dir)
    device = device_for_profile(profile, agent=cfg.agent)

    storage_url = cfg.storage or f"sqlite:///{run_dir / DB_NAME}"
    storage = open_storage(storage_url, cfg.heartbeat, cfg.reconnect_s)
    opened.append(storage)
    space = build_space(task, preset, profile, threads=cfg.threads)
    sampler = make_sampler(cfg.sampler, cfg.seed)
    study, created = open_study(study_name, storage, sampler)
    try:
        settings, store = settle(study, created, cfg, run_dir, given)
    except BaseException:
        device.close()
        raise
    files = TrialFiles(store, run_dir)
    shared = measurement_store(settings, store)
    recovery = Recovery(mode=cfg.recover, steps=cfg.recover_steps)
    # what each layer really runs in is read off onnxruntime's CPU optimiser: for CPU searches only
    inspect = profile.backend == "ort-cpu"
    builder = ArtifactBuilder(task, space, run_dir / "artifacts", recovery=recovery, inspect=inspect)
    # final recovery distils on top of the trial's own recovery (a task's finetune included)
    final = Recovery(mode=FINAL_RECOVERY, steps=cfg.recover_final_steps, after_finetune=True)
    inputs = _trial_inputs(task)
    started = time.time()
    try:
        # every candidate is timed interleaved with the unmodified model (docs/measurement.md)
        try:
            unmodified = builder.build(Candidate(layers={}))
        except CandidateError as exc:
            raise UserError(f"the unmodified model (the latency reference) does not build: {exc}") from None
        measurer = Measurer(
            device,
            cfg.protocol,
            cache_dir=run_dir / "measurements",
            remeasure=cfg.remeasure,
            reference=TimingReference(unmodified.path, inputs, unmodified.sha256),
            # a shared study: one cache in the study's store, so no worker measures an artifact twice
            cache=MeasurementCache(store=shared[0], prefix=shared[1]) if shared else None,
        )
        # the unmodified model first, whatever the preset says: it defines "Δ vs FP32" and "50%"
        old = RunMeta.from_study(study)
        stored = old.reference_record if old is not None else None
        if stored is not None:
            reference = stored
        else:
            try:
                reference = measure_reference(task, space, builder, measurer, inputs)
            except Exception as exc:  # over the memory budget already: no candidate can fit
                if (failure := memory_failure("scoring the unmodified model", exc)) is None:
                    raise
                raise UserError(f"the unmodified model (the reference): {failure}") from None
        budget_ms = cfg.budget_spec.resolve(reference.latency_ms)
        limit = cfg.budget_spec.limit(budget_ms)  # a relative budget is decided on the ratio alone
        floor = None if cfg.floor is None else cfg.floor.floor(reference.accuracy)
        table, greedy = None, list[dict[str, Any]]()
        if cfg.sensitivity:  # cached in the run directory: a resumed search re-uses it
            args = (task, space, builder, measurer, run_dir, reference, floor, budget_ms)
            table, greedy = sensitivity_guidance(*args)
        meta = _check_or_write_meta(study, task, profile, device, budget_ms, cfg, space, run_dir)
        meta.reference, meta.floor = reference.to_dict(), floor
        meta.budget_fraction = cfg.budget_spec.fraction
        meta.max_drop = None if cfg.floor is None else cfg.floor.label
        meta.search = {"sampler": cfg.sampler, "recovery": recovery.to_dict(), "sensitivity": cfg.sensitivity}
        meta.search["greedy"] = len(greedy)  # enqueued unless identical to a baseline
        meta.search["max_memory"] = memory.to_dict()
        predictor = None  # skips sampled candidates predicted beyond the budget (study/_trials.py)
        if cfg.predictor:
            predictor = StudyPredictor(space, unmodified.path, inputs, limit, reference.latency_ms, run_dir)
            predictor.replay(study)
        if table is not None:
            meta.sensitivity = sensitivity_for_report(table)
        meta.save(study)
        # a resumed study gets a different sampler stream, so it does not replay the same proposals
        if study.trials and hasattr(sampler, "reseed_rng"):
            sampler.reseed_rng()
        enqueue_baselines(study, space, greedy)
    except BaseException:
        device.close()
        raise

    out_of_memory = False  # the last trial failed for memory: collect its leftovers first
    current: list[int] = []  # the number of the trial this worker is running

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        nonlocal out_of_memory
        current[:] = [trial.number]
        if out_of_memory:
            gc.collect()  # tensors held in reference cycles with the failure's traceback
            out_of_memory = False
        record = TrialRecord.from_trial(trial)  # an enqueued trial starts with its baseline's
        if record.final_of is None and surplus(study, trial.number, cfg.trials):
            # other workers' trials fill every slot: give it back (docs/distributed.md)
            record.surplus = True
            record.save(trial)
            study.stop()
            raise optuna.TrialPruned("surplus: the study's trials are all claimed")
        record.worker = WORKER  # which worker ran it (a retry says its own)
        candidate = space.sample(trial)
        record.candidate = candidate
        record.save(trial)
        peak = PeakMeter()
        try:
            with peak:
                artifact, m, accuracy = _trial(trial, candidate, record)
        except Exception as exc:
            # the builder names the stage a memory failure happened in; elsewhere it is the trial's
            failure = exc if isinstance(exc, CandidateError) else memory_failure("the trial", exc)
            if failure is None:
                raise
            out_of_memory = failure.stage == "memory"
            record.fail_stage, record.fail_reason = failure.stage, str(failure)
            record.traceback = _save_traceback(run_dir, trial.number, exc)
            files.traceback(trial, run_dir / record.traceback)
            if failure is exc:
                raise
            raise failure from exc
        finally:
            record.peak_memory_bytes = peak.bytes
            record.save(trial)
        latency_ms = measurer.latency_ms(m, candidate.runtime)  # reference latency x ratio
        constraints = {"latency_budget": limit.excess(latency_ms, m.ratio)}
        if floor is not None:
            constraints["accuracy_floor"] = floor - accuracy
        for name, value in constraints.items():
            trial.set_constraint(name, value)
        values = (accuracy, latency_ms, float(artifact.size_bytes))
        files.export_json(trial, TrialResult.of(trial.number, record, values, constraints, artifact.path))
        return values

    def _trial(
        trial: optuna.Trial, candidate: Candidate, record: TrialRecord
    ) -> tuple[Artifact, Measurement, float]:
        """Build, measure and score one candidate, filling ``record`` as it goes."""
        # a final recovery trial distils, within its share of the time (study/_final.py)
        artifact = builder.build(candidate, recovery_of_final(record, final))
        files.onnx(trial, artifact)  # stored once per sha256, linked to this trial
        timings = record.timings = artifact.timings
        record.artifact_path = str(artifact.path.relative_to(run_dir))
        record.sha256, record.size_bytes = artifact.sha256, artifact.size_bytes
        record.precision = artifact.precision
        if predictor is not None and (predicted := predictor.skip(trial, artifact.path, candidate.runtime)):
            record.predicted = predicted  # built, not measured: predicted
            raise optuna.TrialPruned(f"predicted x{predicted['ratio']:.3f} of the reference")
        t0 = time.perf_counter()
        m = measurer.measure(artifact.path, inputs, candidate.runtime)
        timings["measure"] = time.perf_counter() - t0
        record.measurement = m
        if not m.usable:
            raise CandidateError("measure", f"{m.status}: {m.error}")
        t0 = time.perf_counter()
        try:
            accuracy = evaluate_artifact(task, artifact.path)
            if artifact.unrecovered is not None:  # only when recovery ran
                before = evaluate_artifact(task, artifact.unrecovered)
                record.recovery = {"ran": artifact.recovery, "accuracy_before": before}
                record.recovery.update(artifact.recovery_info)  # kd_steps, when distilled
        except Exception as exc:
            raise memory_failure("evaluate", exc) or CandidateError("evaluate", error_line(exc)) from exc
        finally:
            timings["evaluate"] = time.perf_counter() - t0
        if predictor is not None:  # what it had predicted; its error is tracked in predictor.stats
            record.predicted_ratio = predictor.observe(artifact.path, candidate.runtime, m.ratio)
        return artifact, m, accuracy

    def stop_at_target(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        # other workers on the same storage count too: stop once the study as a whole is done
        if counted(study) >= cfg.trials:
            study.stop()

    def run_trials(n: int, timeout: float | None, callbacks: list[Any]) -> None:
        try:
            study.optimize(
                objective, n_trials=n, timeout=timeout, catch=(CandidateError,), callbacks=callbacks
            )
        except Exception as exc:
            if lost(exc) is not None or storage.lost is not None or not _taken_over(exc):
                raise
            number = current[0] if current else "?"
            print(
                f"autotune: trial {number} was failed by the heartbeat while this worker ran it "
                "(it missed its beats); the retry redoes it",
                file=sys.stderr,
            )

    def progress(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if not TrialRecord.from_trial(frozen).surplus:  # a slot given back is no progress
            bar.update(study, frozen)

    deadline = None if cfg.timeout_s is None else started + cfg.timeout_s
    poll_s = max(1.0, cfg.heartbeat / 2)
    bar = Progress(cfg.trials - counted(study), run_dir, cfg.progress)  # a bar, or a line per trial
    meta.stopped = None
    trial_stats: dict[str, Any] = {}
    try:
        # feasibility probe: the enqueued baselines and the most aggressive configuration run first
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        for phase in ("probe", "search"):
            while (remaining := cfg.trials - counted(study)) > 0:
                n = min(remaining, waiting) if phase == "probe" else remaining
                if n <= 0:
                    break
                left = None if deadline is None else deadline - time.time()
                if left is not None and left <= 0:
                    meta.stopped = "timeout"
                    break
                # every slot claimed by trials in flight elsewhere: wait for them (or a stale one)
                if not wait_for_slot(study, cfg.trials, poll_s, deadline):
                    continue
                run_trials(n, left, [progress, stop_at_target])
                if phase == "probe":
                    break
            if meta.stopped:
                break
            if phase == "probe":
                measured, within = baseline_latencies(study), baselines_within(study)
                meta.infeasible = infeasible_message(measured, reference, budget_ms, space, within)
                if meta.infeasible and not cfg.keep_going:
                    meta.stopped = "infeasible"
                    break
        # final recovery: distil the pruned finalists under the budget when they lose more than
        # the floor, within a share of the search's wall time, as new trials (study/_final.py)
        plan = FinalRecovery(cfg.recover_final_steps, cfg.final_share)
        one = partial(run_trials, 1, None, [progress])
        search_s = meta.wall_s + time.time() - started  # every run of the study so far
        context = (search_s, one, bool(recovery_batches(task)), deadline, meta.stopped, reference.accuracy)
        meta.search["final"] = final_recovery(study, budget_ms, floor, plan, *context).to_dict()
        # confirmation round: the candidates that decide the outcome, measured again for longer
        # (its measurements are counted apart from the trials')
        trial_stats = dict(measurer.stats)
        found = ParetoSet(study, run_dir, storage=storage_url, artifacts=store)
        confirmed = confirm.run_round(found, measurer, inputs, limit, cfg.protocol)
        save_confirmed(study, confirmed)
        trial_stats["confirmed"] = len(confirmed)
    except KeyboardInterrupt:
        meta.stopped = "interrupted"
        raise
    finally:
        bar.close()
        # also after Ctrl-C: interrupts_outside_optuna() kept it out of Optuna's writes, so
        # the storage is free for this one
        meta.wall_s += time.time() - started
        meta.measurer = trial_stats or dict(measurer.stats)
        meta.search["predictor"] = predictor.stats if predictor is not None else {"enabled": False}
        try:
            meta.save(study)
        except StorageUnavailable:
            pass  # the database is gone: the error on its way out says so
        finally:
            device.close()
    result = ParetoSet(study, run_dir, storage=storage_url, artifacts=store)
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
        budget=_budget_label(cfg, budget_ms),
        run_dir=str(run_dir.resolve()),
        fingerprint=device.fingerprint(),
        space=space.summary(),
        protocol=cfg.protocol.to_dict(),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(sys.argv),
    )
    meta.save(study)
    return meta


def _budget_label(cfg: SearchConfig, budget_ms: float) -> str:
    spec = cfg.budget_spec
    return f"{spec.label} of FP32 = {format_ms(budget_ms)}" if spec.relative else format_ms(budget_ms)
