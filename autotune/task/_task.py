"""Task: what autotune needs to know about a model to compress it honestly.

A task bundles the model with the data that judges it. ``evaluate`` never sees the torch
model: it receives a ``runner`` that executes the exact ONNX artifact whose latency was
measured, so the accuracy reported is the accuracy of what ships.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from autotune._util import error_line
from autotune.errors import UserError
from autotune.inputs import InputError, default_names, ordered_for, to_numpy

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

#: one batch of calibration or recovery data: arrays in the order of the inputs, or by name
Batch = tuple[np.ndarray, ...] | dict[str, np.ndarray]


class Runner(Protocol):
    """Runs a batch through a candidate artifact: ``runner(x) -> first output`` (numpy).

    Inputs go positionally (in the order of the task's example inputs), by keyword
    (``runner(input_ids=ids, attention_mask=mask)``) or as one dict (``runner(batch)``); numpy
    arrays or torch tensors, any batch size, cast to the dtype of the model's input.
    """

    def __call__(self, *inputs: Any, **named: Any) -> np.ndarray: ...


Evaluate = Callable[[Runner], float]
#: ``finetune(student, teacher)`` trains ``student`` in place, e.g. by knowledge distillation
#: from ``teacher`` (the unmodified model). Called after pruning, before export.
Finetune = Callable[[torch.nn.Module, torch.nn.Module], None]


@dataclass
class Task:
    """A model plus how to judge it.

    Args:
        source: what to compress: the FP32 torch model (put in eval mode by autotune), or the
            path of an ONNX file (then only bit-width and runtime knobs are searched).
        example_inputs: one batch at the deployment batch size; latency is measured on it. A
            tensor, a tuple of tensors (``forward``'s positional arguments; ONNX inputs named
            ``input`` or ``input0, input1, ...``) or a dict of tensors (keyword arguments, as
            Hugging Face models take; the ONNX inputs keep the keys as names). Any dtype: int64
            token ids and masks are measured as int64.
        evaluate: ``evaluate(runner) -> float``, higher is better (accuracy in percent, say).
        calibration: input batches for static int8 quantization: tuples of arrays in the order
            of the inputs, or dicts by input name (default: the example inputs).
        finetune: optional recovery training applied to pruned/sparse candidates.
        name: shown in reports.
        metric: what ``evaluate`` returns, shown in reports ("accuracy", "fidelity", ...).
    """

    source: torch.nn.Module | Path
    example_inputs: ModelInputs
    evaluate: Evaluate
    calibration: Sequence[tuple[np.ndarray, ...]] = field(default_factory=list)
    finetune: Finetune | None = None
    name: str = "model"
    metric: str = "accuracy"
    #: unlabeled input batches for built-in recovery (BatchNorm re-estimation, distillation);
    #: None: the calibration batches
    recovery_data: Sequence[tuple[np.ndarray, ...]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.source, str):
            self.source = Path(self.source)
        self.example_inputs = self._example_inputs(self.example_inputs)
        if not self.calibration:
            self.calibration = [tuple(self.example_feeds().values())]
        self.calibration = [self._batch(b, "calibration") for b in self.calibration]
        if self.recovery_data is not None:
            self.recovery_data = [self._batch(b, "recovery_data") for b in self.recovery_data]

    def _example_inputs(self, given: Any) -> ModelInputs:
        if isinstance(given, Mapping):
            tensors = {str(k): _tensor(v, f"example_inputs[{k!r}]") for k, v in given.items()}
            if isinstance(self.source, torch.nn.Module):
                try:  # the order the exporter gives the ONNX inputs (see inputs.ordered_for)
                    return ordered_for(self.source.forward, tensors)
                except InputError as exc:
                    raise UserError(str(exc)) from None
            return tensors
        if isinstance(given, (torch.Tensor, np.ndarray)):
            given = (given,)
        return tuple(_tensor(t, f"example_inputs[{i}]") for i, t in enumerate(given))

    def _batch(self, batch: Any, what: str) -> tuple[np.ndarray, ...]:
        """A batch as arrays in the order of :attr:`input_names`, whatever form it came in."""
        names = self.input_names
        if isinstance(batch, Mapping):
            missing = [n for n in names if n not in batch]
            if missing:
                raise UserError(f"{what}: a batch has no array for input {missing[0]!r} (inputs: {names})")
            return tuple(to_numpy(batch[n]) for n in names)
        arrays = tuple(to_numpy(a) for a in (batch if isinstance(batch, (tuple, list)) else (batch,)))
        if len(arrays) != len(names):
            raise UserError(f"{what}: a batch has {len(arrays)} arrays; the model takes {names}")
        return arrays

    @property
    def keyword(self) -> bool:
        """Whether the model takes its inputs by keyword (dict example inputs)."""
        return isinstance(self.example_inputs, dict)

    @property
    def input_names(self) -> list[str]:
        """The ONNX input names: the keys of dict example inputs, else ``input``/``input<i>``."""
        if isinstance(self.example_inputs, dict):
            return list(self.example_inputs)
        return default_names(len(self.example_inputs))

    def example_feeds(self) -> dict[str, np.ndarray]:
        """The example inputs by ONNX input name, as numpy arrays of their own dtype."""
        values = (
            self.example_inputs.values() if isinstance(self.example_inputs, dict) else self.example_inputs
        )
        return {n: to_numpy(t) for n, t in zip(self.input_names, values, strict=True)}

    def named(self, batch: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        """A normalised batch (see :attr:`calibration`) by input name."""
        return dict(zip(self.input_names, batch, strict=True))

    def calibration_feeds(self) -> list[dict[str, np.ndarray]]:
        """The calibration batches by input name (what the quantizer feeds)."""
        return [self.named(b) for b in self.calibration]

    @property
    def model(self) -> torch.nn.Module:
        """The torch model; only a torch task has one (check ``isinstance(task.source, Path)``)."""
        if isinstance(self.source, Path):
            raise TypeError(f"task {self.name!r} wraps the ONNX file {self.source}, not a torch model")
        return self.source


def _tensor(value: Any, what: str) -> torch.Tensor:
    """A tensor, or one line: an input is a tensor or an array of numbers, not a list of tensors
    or a nested structure (``past_key_values``, say)."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        tensor = torch.as_tensor(value)
    except Exception as exc:  # noqa: BLE001 - whatever torch says, the user gets one line
        raise UserError(
            f"{what} is a {type(value).__name__} that is not a tensor ({error_line(exc, 120)}): "
            "each input must be a tensor or a numeric array"
        ) from None
    if tensor.dtype.is_complex:
        raise UserError(f"{what} is complex: each input must be a real tensor")
    return tensor
