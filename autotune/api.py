"""The Python API: ``autotune.search(model, example_inputs, evaluate=..., budget=...)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from autotune.devices import Protocol
from autotune.result import ParetoSet
from autotune.study import SearchConfig, run_search
from autotune.task import Evaluate, Finetune, Task


def search(
    model: torch.nn.Module | Task,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    *,
    evaluate: Evaluate | None = None,
    budget: str | float,
    device: str = "cpu",
    trials: int = 30,
    space: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    calibration: Sequence[tuple[np.ndarray, ...]] | None = None,
    finetune: Finetune | None = None,
    out_dir: str | Path = "runs",
    seed: int = 0,
    threads: int | None = None,
    protocol: Protocol | None = None,
    agent: str | None = None,
    remeasure: bool = False,
    name: str = "model",
    progress: bool = True,
    report: str | Path | bool | None = None,
) -> ParetoSet:
    """Search compressed variants of ``model`` for the best accuracy under ``budget``.

    Args:
        model: a torch module (or a ready :class:`Task`, then the data arguments are ignored).
        example_inputs: one batch at deployment batch size; latency is measured on it.
        evaluate: ``evaluate(runner) -> float``, higher is better; ``runner`` runs the exact
            ONNX artifact whose latency was measured.
        budget: latency budget, e.g. ``"10ms"``, ``"500us"`` or milliseconds as a number.
        device: a device profile name (``cpu``, ``cuda``, ``jetson``, ...) or a profile YAML.
        trials: number of trials, baselines included; a resumed study continues to it.
        space: a search_spaces preset name or YAML path.
        storage: Optuna storage URL (default: SQLite in ``out_dir/<study>/study.db``).
        calibration: batches for int8 calibration (default: the example inputs).
        finetune: ``finetune(student, teacher)`` recovery training after pruning.
        agent: URL of a remote agent, overriding the device profile's ``agents``.
        remeasure: ignore cached measurements.
        report: where to write the HTML report (default ``reports/<study>.html``; False: none).

    Returns:
        The :class:`ParetoSet`: ``.pareto``, ``.best``, ``.report()``, ``.best.export()``.
    """
    if isinstance(model, Task):
        task = model
    else:
        if example_inputs is None or evaluate is None:
            raise TypeError("search() needs example_inputs and evaluate with a torch model")
        task = Task(
            source=model,
            example_inputs=example_inputs if isinstance(example_inputs, tuple) else (example_inputs,),
            evaluate=evaluate,
            calibration=list(calibration or []),
            finetune=finetune,
            name=name,
        )
    cfg = SearchConfig(
        budget=budget,
        device=device,
        trials=trials,
        space=space,
        storage=storage,
        study_name=study_name,
        out_dir=Path(out_dir),
        seed=seed,
        threads=threads,
        protocol=protocol or Protocol(),
        agent=agent,
        remeasure=remeasure,
        progress=progress,
        report=Path(report) if isinstance(report, (str, Path)) else (None if report is True else report),
    )
    return run_search(task, cfg)
