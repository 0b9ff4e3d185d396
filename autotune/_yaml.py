"""Strict YAML loading: a misspelled key is an error that names the nearest valid key."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from autotune._util import error_line
from autotune.errors import UserError


def load_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; any problem is a one-line UserError."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or error_line(exc, with_type=False)
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def check_keys(data: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    """Reject unknown keys, suggesting the closest allowed one."""
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")
