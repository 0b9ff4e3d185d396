"""The search's configuration, checked once when it is built (light imports: the CLI checks it
before loading torch or a model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autotune.budget import Budget, MaxDrop, parse_budget_spec, parse_duration, parse_max_drop
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
        progress: show a progress bar.
        report: where to write the HTML report (default ``reports/<study>.html``; False: none).
        max_drop: accuracy floor: points below the unmodified model (``1.0``) or relative (``"1%"``).
        keep_going: search on when the feasibility probe finds the budget out of reach.
        sampler: ``auto``, ``tpe``, ``nsga2``, ``gp`` or ``random``.
        recover: ``bn`` (BatchNorm re-estimation, the default), ``kd`` (+ distillation) or ``none``.
        recover_steps: distillation steps per pruned candidate with ``recover="kd"``.
        recover_final_steps: distillation steps for the 2 most accurate and the 2 largest pruned
            candidates under the budget, re-built as extra trials at the end (0: off).
        sensitivity: measure per-layer sensitivity first; it drops values that alone break the
            floor and enqueues greedy candidates after the baselines.
        timeout: wall-clock limit (``"30m"``, ``"90s"`` or seconds); the search ends cleanly.
        predictor: skip sampled candidates the online latency predictor puts beyond the budget
            by its safe margin (recorded as pruned, with the predicted figure); False measures
            every candidate (``--no-predictor``).
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
    max_drop: str | float | None = None
    keep_going: bool = False
    sampler: str = "auto"
    recover: str = "bn"
    recover_steps: int = 100
    recover_final_steps: int = 0
    sensitivity: bool = False
    timeout: str | float | None = None
    predictor: bool = True
    artifacts: str | None = None
    heartbeat: int = 30
    reconnect: str | float = 120
    task_ref: str | None = None
    task_data: str | None = None
    budget_spec: Budget = field(init=False)  # absolute, or relative to the unmodified model
    floor: MaxDrop | None = field(init=False)
    timeout_s: float | None = field(init=False)
    reconnect_s: float = field(init=False)

    def __post_init__(self) -> None:
        from autotune.build import MODES
        from autotune.study._samplers import SAMPLERS

        self.budget_spec = parse_budget_spec(self.budget)
        self.floor = None if self.max_drop is None else parse_max_drop(self.max_drop)
        self.timeout_s = None if self.timeout is None else parse_duration(self.timeout)
        try:
            self.reconnect_s = parse_duration(self.reconnect)
        except UserError:
            raise UserError(
                f"--reconnect {self.reconnect!r}: expected a positive duration: 90s, 2m"
            ) from None
        if not _positive_int(self.heartbeat):
            raise UserError(f"--heartbeat {self.heartbeat}: must be a whole number of seconds, at least 1")
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if self.recover not in MODES:
            raise UserError(f"--recover {self.recover!r}: choose one of {', '.join(MODES)}")
        for name in ("recover_steps", "recover_final_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise UserError(f"--{name.replace('_', '-')} {value}: must be zero or more")
        if not _positive_int(self.trials):
            raise UserError(f"--trials {self.trials}: must be at least 1")
        if self.threads is not None and not _positive_int(self.threads):
            raise UserError(f"--threads {self.threads}: must be at least 1")
        self.out_dir = Path(self.out_dir)
        self.protocol = self.protocol or Protocol()  # None from a caller means the default


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
