"""Resolve ``--model`` into a Task: the CLI's job, so the task package depends on no task factory."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from autotune.errors import UserError
from autotune.task import Task

#: the built-in demo, as the task reference a worker loads (``--model`` left out)
DEMO_TASK = "autotune.task.demo:demo_task"


def add_task_arguments(p: argparse.ArgumentParser, data_help: str) -> None:
    """``--model`` and ``--data``: the same for every verb that loads a task."""
    p.add_argument(
        "--model",
        help="'package.module:function' returning an autotune.Task, or a .onnx file "
        "(default: the built-in digits demo)",
    )
    p.add_argument(
        "--data",
        help="with --model FILE.onnx: an .npz with one array per model input (named as the input) "
        f"and optional integer 'labels'{data_help}",
    )


def load_task(spec: str | None, data: str | None = None) -> Task:
    """Resolve ``--model``: None (built-in demo), ``module:function`` or ``path.onnx``; ``data``:
    an .npz of inputs (and labels) for an ONNX model (onnx_task.load_npz says the format)."""
    if data is not None and (spec is None or not spec.endswith(".onnx")):
        raise UserError("--data goes with --model FILE.onnx (a module:function task brings its own data)")
    if data is not None and not Path(data).is_file():
        raise UserError(f"--data {data}: no such file")
    if spec is None:
        from autotune.task.demo import demo_task

        return demo_task()
    if spec.endswith(".onnx"):
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"--model {spec}: no such ONNX file")
        from autotune.task import onnx_task

        return onnx_task(path, data=Path(data) if data else None)
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise UserError(
            f"--model {spec!r}: expected 'package.module:function' returning a Task, or a .onnx file"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"--model {spec}: cannot import module {module_name!r} ({exc})") from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise UserError(f"--model {spec}: module {module_name!r} has no function {func_name!r}")
    task = factory()
    if not isinstance(task, Task):
        raise UserError(f"--model {spec}: {func_name}() returned {type(task).__name__}, not a Task")
    return task
