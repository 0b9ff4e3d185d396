"""Device profiles (device_profiles/*.yaml): which knob values are real on a device."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune._yaml import check_keys, load_mapping
from autotune.errors import UserError
from autotune.knobs import LAYER_KNOBS, RUNTIME_KNOBS, KnobValue, study_section

_ROOT = Path(__file__).resolve().parent.parent  # the autotune package


def data_dir(name: str) -> Path:
    """A top-level data folder: from the source checkout, or packaged inside the wheel."""
    for candidate in (_ROOT.parent / name, _ROOT / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(name)


@dataclass
class DeviceProfile:
    name: str
    backend: str
    description: str = ""
    knobs: dict[str, list[KnobValue]] = field(default_factory=dict)
    runtime: dict[str, list[Any]] = field(default_factory=dict)  # session options: values that are real
    recipe: dict[str, list[Any]] = field(default_factory=dict)  # quantization recipe values that are real
    notes: dict[str, str] = field(default_factory=dict)  # why a knob value is left out
    agents: list[str] = field(default_factory=list)  # remote profiles: agent URLs
    options: dict[str, Any] = field(default_factory=dict)  # backend specific
    path: Path | None = None


_KEYS = ("name", "backend", "description", "knobs", "runtime", "recipe", "notes", "agents", "options")


def named_yaml(name_or_path: str, folder: str, flag: str, kind: str, other: str) -> Path:
    """A ``--device`` / ``--space`` value: a name in the packaged ``folder``, or a .yaml path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    path = data_dir(folder) / f"{name_or_path}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in data_dir(folder).glob("*.yaml")))
        raise UserError(f"{flag} {name_or_path!r}: unknown {kind}; choose one of {names}, or give {other}")
    return path


def available_profiles() -> list[str]:
    return sorted(p.stem for p in data_dir("device_profiles").glob("*.yaml"))


def load_profile(name_or_path: str) -> DeviceProfile:
    """``--device``: a profile name (device_profiles/NAME.yaml) or a path to a YAML file."""
    path = named_yaml(name_or_path, "device_profiles", "--device", "device", "a profile .yaml path")
    data = load_mapping(path)
    check_keys(data, _KEYS, str(path))
    for key in ("backend",):
        if key not in data:
            raise UserError(f"{path}: missing required key {key!r}")
    knobs = data.get("knobs") or {}
    check_keys(knobs, LAYER_KNOBS, f"{path}: knobs")
    runtime = data.get("runtime") or {}
    check_keys(runtime, RUNTIME_KNOBS, f"{path}: runtime")
    parsed = {
        k: [LAYER_KNOBS[k].check(v, f"{path}: knobs.{k}") for v in _as_list(vals, path, k)]
        for k, vals in knobs.items()
    }
    threads = [_thread_count(v, path) for v in _as_list(runtime.get("threads", [1]), path, "threads")]
    runtime = study_section(data, "runtime", str(path))
    recipe = study_section(data, "recipe", str(path))
    return DeviceProfile(
        name=str(data.get("name", path.stem)),
        backend=str(data["backend"]),
        description=str(data.get("description", "")),
        knobs=parsed,
        runtime={**runtime, "threads": threads},
        recipe=recipe,
        notes={str(k): str(v) for k, v in (data.get("notes") or {}).items()},
        agents=[str(a) for a in data.get("agents") or []],
        options=dict(data.get("options") or {}),
        path=path,
    )


def _as_list(v: Any, path: Path, key: str) -> list[Any]:
    if not isinstance(v, list) or not v:
        raise UserError(f"{path}: {key} must be a non-empty list, got {v!r}")
    return v


def _thread_count(v: Any, path: Path) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise UserError(f"{path}: runtime.threads values must be positive integers, got {v!r}")
    return v
