"""The Python API: ``autotune.search(model, example_inputs, evaluate=..., budget=...)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from autotune.result import ParetoSet
from autotune.study import SearchConfig
from autotune.task import Batch, Evaluate, Finetune, Task
from autotune.tune import run_search


def search(
    model: torch.nn.Module | Task,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...] | Mapping[str, torch.Tensor] | None = None,
    *,
    evaluate: Evaluate | None = None,
    calibration: Sequence[Batch] | None = None,
    finetune: Finetune | None = None,
    name: str = "model",
    **options: Any,
) -> ParetoSet:
    """Search compressed variants of ``model`` for the best accuracy under ``budget``.

    Args:
        model: a torch module (or a ready :class:`Task`, then the data arguments are ignored).
        example_inputs: one batch at deployment batch size; latency is measured on it: a
            tensor, a tuple of tensors (positional arguments) or a dict of tensors (keyword
            arguments, e.g. ``{"input_ids": ids, "attention_mask": mask}`` for a Hugging Face
            model), of any dtype (int64 token ids are measured as int64).
        evaluate: ``evaluate(runner) -> float``, higher is better; ``runner`` runs the exact
            ONNX artifact whose latency was measured.
        calibration: batches for int8 calibration, tuples of arrays or dicts by input name
            (default: the example inputs).
        finetune: ``finetune(student, teacher)`` recovery training after pruning.
        name: the task's name in study names and reports.
        **options: the fields of :class:`~autotune.tune._loop.SearchConfig`: ``budget`` (required),
            ``device``, ``trials``, ``space``, ``storage``, ``study_name``, ``out_dir``, ``seed``,
            ``threads``, ``protocol``, ``agent``, ``remeasure``, ``progress``, ``report``,
            ``max_drop``, ``keep_going``, ``sampler``, ``recover``, ``recover_steps``,
            ``recover_final_steps``, ``recover_final_share``, ``sensitivity``, ``timeout``,
            ``predictor``, ``max_memory``; for a study several workers share
            (docs/distributed.md): ``artifacts``, ``heartbeat``, ``reconnect`` and ``task_ref``
            (``"module:function"``, so ``autotune worker`` can load the task). Defaults that guard
            the result: ``max_drop="5%"`` (the accuracy floor; None turns it off) and final
            recovery (``recover_final_steps=300`` within ``recover_final_share="20%"`` of the
            search's wall time); docs/accuracy-floor.md.

    Returns:
        The :class:`ParetoSet`: ``.pareto``, ``.best``, ``.report()``, ``.best.export()``.
    """
    cfg = SearchConfig(**options)  # checks the options before any model work
    if isinstance(model, Task):
        task = model
    else:
        if example_inputs is None or evaluate is None:
            raise TypeError("search() needs example_inputs and evaluate with a torch model")
        task = Task(
            source=model,
            example_inputs=example_inputs,  # type: ignore[arg-type]  # Task normalises it
            evaluate=evaluate,
            calibration=list(calibration or []),  # type: ignore[arg-type]  # dicts: Task orders them
            finetune=finetune,
            name=name,
        )
    return run_search(task, cfg)
