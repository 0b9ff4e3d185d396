"""The search's configuration, checked once when it is built (light imports: the CLI checks it
before loading torch or a model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autotune._memory import MemorySpec, parse_max_memory
from autotune.budget import (
    DEFAULT_MAX_DROP,
    Budget,
    MaxDrop,
    parse_budget_spec,
    parse_duration,
    parse_floor_option,
    parse_share,
)
from autotune.errors import UserError
from autotune.records import Protocol


@dataclass
class SearchConfig:
    """How to search; every field is also a keyword argument of :func:`autotune.search`.

    Checked once, here: a bad value raises :class:`UserError` (one line; exit code 2 in the CLI).

    Args:
        budget: latency budget, e.g. ``"10ms"``, ``"500us"``, milliseconds as a number, or a
            share of the unmodified model's measured latency: ``"50%"``, ``"0.5x"``.
        device: a device profile name (``cpu``, ``cuda``, ``jetson``, ...) or a profile YAML.
        trials: number of trials, baselines included; a resumed study continues to it.
        space: a search_spaces preset name or YAML path.
        storage: Optuna storage URL (default: SQLite in ``out_dir/<study>/study.db``).
        study_name: default ``TASK-DEVICE-BUDGET``; the same name resumes.
        out_dir: the runs directory.
        seed: sampler seed.
        threads: fix the runtime thread count instead of the profile's choices.
        protocol: the measurement protocol.
        agent: URL of a remote agent, overriding the device profile's ``agents``.
        remeasure: ignore cached measurements.
        progress: show progress: a bar when stderr is a terminal, and one line per finished
            trial on stdout when stdout is not that terminal (a log file, a pipe, CI).
        report: where to write the HTML report (default ``reports/<study>.html``; False: none).
        max_drop: accuracy floor: points below the unmodified model (``1.0``) or relative
            (``"1%"``); default ``"5%"`` (docs/accuracy-floor.md); None or ``"none"``: no floor.
            ``best``, the summary's ``*``, the report's "Ship trial N" and ``export`` without
            ``--trial`` never name a candidate below it.
        keep_going: search on when the feasibility probe finds the budget out of reach.
        sampler: a name of :data:`autotune.study.SAMPLERS` (``autotune --help`` lists them).
        recover: recovery of pruned candidates, a name of :data:`autotune.build.RECOVERIES`
            (``autotune --help`` lists them; default ``bn``, BatchNorm re-estimation).
        recover_steps: distillation steps per pruned candidate with ``recover="kd"``.
        recover_final_steps: final recovery: distillation steps (from the unmodified model, on
            unlabeled inputs) for the most promising pruned finalists under the budget,
            re-built, re-measured and re-scored as extra trials at the end; it runs when a
            pruned candidate under the budget is below the floor (every time without a floor).
            Default 300; 0: off.
        recover_final_share: how much time final recovery may take, as a share of the search's
            wall time (``"20%"``, the default, or ``0.2``; 0: off). The most promising finalists
            go first and the last one's distillation is cut short to fit.
        sensitivity: measure per-layer sensitivity first; it drops values that alone break the
            floor and enqueues greedy candidates after the baselines.
        timeout: wall-clock limit (``"30m"``, ``"90s"`` or seconds); the search ends cleanly.
        predictor: skip sampled candidates the online latency predictor puts beyond the budget
            by its safe margin (recorded as pruned, with the predicted figure); False measures
            every candidate (``--no-predictor``).
        max_memory: the most memory the search process may hold (``"8GiB"``, ``"50%"`` of the
            memory available at the start, or bytes; default ``"80%"``): a candidate whose build
            or evaluation needs more fails (stage ``memory``) and the search goes on
            (docs/memory.md).
        artifacts: the artifact store every worker reaches (``file:///shared/dir``, a path, or
            ``s3://bucket/prefix``); default: ``out_dir/<study>/artifacts``. Recorded with the
            study; a joining worker uses the study's unless given another URL to the same store.
        heartbeat: seconds between a running trial's heartbeats; a trial silent for 4 of them
            (its worker was killed) is failed and retried once.
        reconnect: how long a worker keeps retrying a lost database before it stops
            (``"2m"``, ``"90s"`` or seconds).
        task_ref: how a worker loads the task: ``module:function``, or the ``.onnx`` file
            (with ``task_data``, its ``.npz``); the CLI sets it from ``--model``. Without it
            ``autotune worker`` cannot join the study.
        task_data: the ``.npz`` of an ONNX task (``--data``).
    """

    budget: str | float
    device: str = "cpu"
    trials: int = 30
    space: str | None = None
    storage: str | None = None
    study_name: str | None = None
    out_dir: str | Path = Path("runs")
    seed: int = 0
    threads: int | None = None
    protocol: Protocol = field(default_factory=Protocol)
    agent: str | None = None
    remeasure: bool = False
    progress: bool = True
    report: str | Path | bool | None = None
    max_drop: str | float | None = DEFAULT_MAX_DROP
    keep_going: bool = False
    sampler: str = "auto"
    recover: str = "bn"
    recover_steps: int = 100
    recover_final_steps: int = 300  # 300 steps, not 100, recovered width 0.25 on the demo
    recover_final_share: str | float = "20%"
    sensitivity: bool = False
    timeout: str | float | None = None
    predictor: bool = True
    max_memory: str | float | None = None
    artifacts: str | None = None
    heartbeat: int = 30
    reconnect: str | float = 120
    task_ref: str | None = None
    task_data: str | None = None
    budget_spec: Budget = field(init=False)  # absolute, or relative to the unmodified model
    floor: MaxDrop | None = field(init=False)
    timeout_s: float | None = field(init=False)
    memory_spec: MemorySpec = field(init=False)
    reconnect_s: float = field(init=False)
    final_share: float = field(init=False)  # recover_final_share as a fraction

    def __post_init__(self) -> None:
        # the registries, not lists kept here: a registered name is accepted as the CLI accepts it
        from autotune.build import RECOVERIES
        from autotune.study._samplers import SAMPLERS

        self.budget_spec = parse_budget_spec(self.budget)
        self.floor = parse_floor_option(self.max_drop)
        self.final_share = parse_share(self.recover_final_share, "--recover-final-share")
        self.timeout_s = None if self.timeout is None else parse_duration(self.timeout)
        self.memory_spec = parse_max_memory(self.max_memory)
        SAMPLERS.check(self.sampler)
        RECOVERIES.check(self.recover)
        try:
            self.reconnect_s = parse_duration(self.reconnect)
        except UserError:
            raise UserError(
                f"--reconnect {self.reconnect!r}: expected a positive duration: 90s, 2m"
            ) from None
        if not _positive_int(self.heartbeat):
            raise UserError(f"--heartbeat {self.heartbeat}: must be a whole number of seconds, at least 1")
        for name in ("recover_steps", "recover_final_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise UserError(f"--{name.replace('_', '-')} {value}: must be zero or more")
        if not _positive_int(self.trials):
            raise UserError(f"--trials {self.trials}: must be at least 1")
        if self.threads is not None and not _positive_int(self.threads):
            raise UserError(f"--threads {self.threads}: must be at least 1")
        if self.study_name is not None:
            check_study_name(self.study_name)
        self.out_dir = Path(self.out_dir)
        self.protocol = self.protocol or Protocol()  # None from a caller means the default


def check_study_name(name: str) -> None:
    """A study name is a folder under the runs directory: one path component, no more."""
    if not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise UserError(
            f"--study {name!r}: a study name is one folder name under --out (no '/', '..' or absolute "
            "path); use --out to choose where runs go"
        )


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
