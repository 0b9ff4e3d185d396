"""Session-wide test hooks."""

from __future__ import annotations

import sys
from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the zoo test found searchable per model (issue 22: which knobs, how many layers)."""
    zoo = sys.modules.get("zoo_models")
    searched = getattr(zoo, "SEARCHED", None)
    if not searched:
        return
    terminalreporter.section("zoo: knobs searched per model (layers; blocks for depth)")
    for name, counts in searched.items():
        terminalreporter.write_line(f"{name:26s} {zoo.describe_knobs(counts)}")  # type: ignore[union-attr]
