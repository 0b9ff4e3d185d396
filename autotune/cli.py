"""``autotune``: the command line. ``autotune --budget 10ms --device cpu`` runs a search;
other verbs are subcommands, each in its own module under :mod:`autotune.commands`.

Bad input prints one line and exits with code 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from autotune._util import first_line
from autotune.errors import UserError

#: verb -> (module, one-line help). A module defines ``add_arguments(parser)`` and ``run(args)``.
COMMANDS: dict[str, tuple[str, str]] = {
    "search": ("autotune.commands.search", "search for the best model under a latency budget (default)"),
    "worker": ("autotune.commands.worker", "join a study by its storage URL and name: one more worker"),
    "report": ("autotune.commands.report", "rebuild the HTML report of a run from its storage"),
    "export": ("autotune.commands.export", "write one trial's ONNX artifact and its JSON record"),
    "devices": ("autotune.commands.devices", "list device profiles and whether each is usable here"),
    "measure": ("autotune.commands.measure", "measure one ONNX model's latency on a device"),
    "agent": ("autotune.commands.agent", "run the measurement agent on an edge device"),
    "agent-wheel": ("autotune.commands.agent_wheel", "build the wheel that installs the agent on a device"),
    "sensitivity": ("autotune.commands.sensitivity", "per-layer accuracy and latency of each knob value"),
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def make_parser(verb: str) -> tuple[Parser, object]:
    module_name, help_text = COMMANDS[verb]
    module = importlib.import_module(module_name)
    prog = "autotune" if verb == "search" else f"autotune {verb}"
    epilog = None
    if verb == "search":
        epilog = "other commands:\n" + "\n".join(
            f"  autotune {v:<8} {h}" for v, (_, h) in COMMANDS.items() if v != "search"
        )
    parser = Parser(
        prog=prog,
        description=first_line(module.__doc__ or "") or help_text,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return parser, module


def _glue_negative_values(argv: list[str]) -> list[str]:
    """``--budget -3ms`` -> ``--budget=-3ms``: argparse would take -3ms for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--budget" and arg.startswith("-"):
            out[-1] = f"--budget={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv and argv[0] in COMMANDS else "search"
    if argv and argv[0] == verb:
        argv = argv[1:]
    parser, module = make_parser(verb)
    args = parser.parse_args(_glue_negative_values(argv))
    try:
        return int(module.run(args) or 0)  # type: ignore[attr-defined]
    except UserError as exc:
        print(f"autotune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nautotune: interrupted; completed trials are saved, run the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
