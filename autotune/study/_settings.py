"""What a worker needs to join a study, stored with the study when it is created.

``autotune worker --storage URL --study NAME`` takes nothing else: the task reference, the device
profile and search space (their YAML text, so a worker on another machine uses exactly the same),
the budget, seed, protocol, sampler and recovery options, the heartbeat and the artifact store
are read from here. A search joining the study with a command line of its own is compared
against them, and refused with the differences named (``--trials`` may grow: that resumes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from autotune.budget import parse_budget_spec
from autotune.errors import UserError
from autotune.records import Protocol
from autotune.study._config import SearchConfig
from autotune.study._records import load_settings, save_settings

if TYPE_CHECKING:
    from autotune.study._store import Store

#: the fields a joining search must match (the rest is the worker's own, or may grow)
COMPARED = (
    "task",
    "device",
    "space",
    "budget",
    "seed",
    "threads",
    "protocol",
    "sampler",
    "recover",
    "recover_steps",
    "recover_final_steps",
    "max_drop",
    "keep_going",
    "sensitivity",
    "predictor",
    "heartbeat",
)


def _yaml_of(spec: str | None, kind: str) -> dict[str, str]:
    """A profile or preset as given and its YAML text (what a worker elsewhere loads)."""
    from autotune.space import data_dir

    name = spec or "default"
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = data_dir(kind) / f"{name}.yaml"
        filename = f"{name}.yaml"
    else:
        filename = path.name
    return {"spec": name, "file": filename, "yaml": path.read_text(encoding="utf-8")}


@dataclass
class StudySettings:
    """The settings of a distributed study; see the module docstring."""

    task: dict[str, Any]  # {"ref": "module:function"} or {"onnx": {...}, "data": {...} | None}
    device: dict[str, str]  # {"spec", "file", "yaml"}
    space: dict[str, str]
    budget: str
    trials: int
    seed: int
    threads: int | None
    protocol: dict[str, Any]
    sampler: str
    recover: str
    recover_steps: int
    recover_final_steps: int
    max_drop: str | None
    keep_going: bool
    sensitivity: bool
    predictor: bool
    heartbeat: int
    artifacts: str  # the artifact store's URL
    measurements: str = "local"  # "store": the measurement cache is in the store, shared
    agent: str | None = None
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    @classmethod
    def from_config(
        cls, cfg: SearchConfig, task: dict[str, Any], artifacts: str, shared: bool
    ) -> StudySettings:
        return cls(
            task=task,
            device=_yaml_of(cfg.device, "device_profiles"),
            space=_yaml_of(cfg.space, "search_spaces"),
            budget=parse_budget_spec(cfg.budget).label,
            trials=cfg.trials,
            seed=cfg.seed,
            threads=cfg.threads,
            protocol=cfg.protocol.to_dict(),
            sampler=cfg.sampler,
            recover=cfg.recover,
            recover_steps=cfg.recover_steps,
            recover_final_steps=cfg.recover_final_steps,
            max_drop=None if cfg.floor is None else cfg.floor.label,
            keep_going=cfg.keep_going,
            sensitivity=cfg.sensitivity,
            predictor=cfg.predictor,
            heartbeat=cfg.heartbeat,
            artifacts=artifacts,
            measurements="store" if shared else "local",
            agent=cfg.agent,
        )

    @classmethod
    def from_study(cls, study: optuna.Study) -> StudySettings | None:
        attrs = load_settings(study)
        if attrs is None:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in attrs.items() if k in known})

    def save(self, study: optuna.Study) -> None:
        save_settings(study, asdict(self))

    def differences(self, other: StudySettings) -> list[str]:
        """``name study-value (this worker: value)`` for each compared field that differs."""
        out = []
        for name in COMPARED:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name in ("device", "space"):
                if mine["spec"] != theirs["spec"]:
                    out.append(f"{name} {mine['spec']!r} (this worker: {theirs['spec']!r})")
                elif mine["yaml"] != theirs["yaml"]:
                    out.append(f"{name} {mine['spec']!r} (this worker's YAML differs from the study's)")
            elif name == "task":
                if _task_label(mine) != _task_label(theirs):
                    out.append(f"task {_task_label(mine)} (this worker: {_task_label(theirs)})")
            elif name == "protocol":
                if Protocol.from_dict(mine) != Protocol.from_dict(theirs):
                    out.append("protocol (--quick or not: this worker's measurement protocol differs)")
            elif mine != theirs:
                out.append(f"{name.replace('_', '-')} {mine!r} (this worker: {theirs!r})")
        return out

    def to_config(self, run_dir: Path, store: Store | None = None, **local: Any) -> SearchConfig:
        """The SearchConfig of a worker: these settings, the device and space written under
        ``run_dir`` (their own file names, so their names match the study's), and ``local``:
        the worker's own options (out_dir, progress, report, timeout, remeasure, reconnect...)."""
        folder = run_dir / ".settings"
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in ("device", "space"):
            entry = getattr(self, name)
            target = folder / name / entry["file"]
            target.parent.mkdir(exist_ok=True)
            target.write_text(entry["yaml"], encoding="utf-8")
            paths[name] = str(target)
        return SearchConfig(
            budget=self.budget,
            device=paths["device"],
            trials=self.trials,
            space=paths["space"],
            seed=self.seed,
            threads=self.threads,
            protocol=Protocol.from_dict(self.protocol),
            agent=local.pop("agent", None) or self.agent,
            max_drop=self.max_drop,
            keep_going=self.keep_going,
            sampler=self.sampler,
            recover=self.recover,
            recover_steps=self.recover_steps,
            recover_final_steps=self.recover_final_steps,
            sensitivity=self.sensitivity,
            predictor=self.predictor,
            heartbeat=self.heartbeat,
            artifacts=local.pop("artifacts", None) or self.artifacts,
            task_ref=self.task.get("ref"),
            **local,
        )


def _task_label(task: dict[str, Any]) -> str:
    if "ref" in task:
        return repr(task["ref"])
    if "onnx" in task:
        data = task.get("data")
        return f"{task['onnx']['name']} (sha256 {task['onnx']['sha256'][:12]})" + (
            f" with data sha256 {data['sha256'][:12]}" if data else ""
        )
    return "(a Task object passed from Python)"


def refuse(study_name: str, diffs: list[str]) -> UserError:
    return UserError(
        f"study {study_name!r} was created with other settings: {'; '.join(diffs)}; join it with "
        f"'autotune worker --storage URL --study {study_name}', or pass a new --study name"
    )
