"""The search's configuration, checked once when it is built (light imports: the CLI checks it
before loading torch or a model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autotune.budget import parse_budget
from autotune.errors import UserError
from autotune.records import Protocol


@dataclass
class SearchConfig:
    """How to search; every field is also a keyword argument of :func:`autotune.search`.

    Checked once, here: a bad value raises :class:`UserError` (one line; exit code 2 in the CLI).

    Args:
        budget: latency budget, e.g. ``"10ms"``, ``"500us"`` or milliseconds as a number.
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
    budget_ms: float = field(init=False)  # the budget in milliseconds

    def __post_init__(self) -> None:
        self.budget_ms = parse_budget(self.budget)
        if not _positive_int(self.trials):
            raise UserError(f"--trials {self.trials}: must be at least 1")
        if self.threads is not None and not _positive_int(self.threads):
            raise UserError(f"--threads {self.threads}: must be at least 1")
        self.out_dir = Path(self.out_dir)
        self.protocol = self.protocol or Protocol()  # None from a caller means the default


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
