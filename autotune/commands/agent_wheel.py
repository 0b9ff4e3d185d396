"""Build this project's wheel to install the agent on a device (no package index involved).

PyPI's ``autotune`` is an unrelated project, so the device never installs by name: build the
wheel here, copy it over, and install the file with the ``agent`` extra::

    autotune agent-wheel                      # -> dist/autotune_hw-<version>-py3-none-any.whl
    scp dist/autotune_hw-*.whl jetson:
    ssh jetson "python3 -m venv ~/autotune-agent && ~/autotune-agent/bin/pip install \\
        './autotune_hw-<version>-py3-none-any.whl[agent]'"

Equivalent by hand, from the source checkout: ``pip wheel --no-deps . -w dist``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("dist"), help="where to write the wheel (default: dist)")
    p.add_argument(
        "--source", type=Path, default=None,
        help="the source checkout (default: the one this autotune runs from)",
    )  # fmt: skip


def source_checkout() -> Path | None:
    """The checkout this ``autotune`` is imported from, if it is one (has a pyproject.toml)."""
    import autotune

    root = Path(autotune.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def run(args: argparse.Namespace) -> int:
    from autotune.errors import UserError

    source = args.source or source_checkout()
    if source is None or not (Path(source) / "pyproject.toml").is_file():
        raise UserError(
            "agent-wheel builds from a source checkout (pyproject.toml not found); pass --source DIR"
        )
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.whl"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise UserError(f"pip wheel failed: {' | '.join(tail)}")
    built = sorted(set(out.glob("*.whl")) - before) or sorted(out.glob("autotune_hw-*.whl"))
    if not built:
        raise UserError(f"pip wheel wrote no wheel to {out}")
    wheel = built[-1]
    print(f"built {wheel}")
    print(f"on the device: pip install './{wheel.name}[agent]'   (after copying it there)")
    return 0
