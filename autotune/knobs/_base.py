"""The knob interfaces.

A :class:`LayerKnob` takes one value per layer: :class:`TorchKnob` changes a copy of the torch
module before export (and recovery runs after it), :class:`OnnxKnob` rewrites the exported graph.
A knob owns everything about itself: parsing, labels, how aggressive a value is, which layers it
applies to (``discover``), how it is applied, and which values pay on a device. The registry in
:mod:`autotune.knobs` is the one list the space, the builder, the baselines, the report, the
sensitivity table, the device profiles and ``autotune devices`` read.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from autotune.errors import UserError

if TYPE_CHECKING:
    import onnx
    from torch import nn

    from autotune.devices import Capabilities
    from autotune.inputs import ModelInputs
    from autotune.knobs._quantize import CalibrationBatch
    from autotune.knobs._recipe import Recipe

KnobValue = float | int | str

MAX_NAMED = 4  # layers named in one note before "and N more"


def name_layers(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown if len(names) <= MAX_NAMED else f"{shown} and {len(names) - MAX_NAMED} more"


@dataclass
class Discovery:
    """What discovery learnt about a model, shared by every knob's :meth:`LayerKnob.discover`.

    ``model`` is None for an ONNX task: then only :class:`OnnxKnob` s apply, and ``layers`` are
    the graph's weighted nodes.
    """

    model: nn.Module | None
    example_inputs: ModelInputs
    calibration: Sequence[CalibrationBatch]
    onnx_path: Path  # the unmodified model's ONNX export
    nodes: Mapping[str, onnx.NodeProto]  # searched layer -> its ONNX node
    ignored: list[str] = field(default_factory=list)  # layers whose output width must stay

    @property
    def layers(self) -> list[str]:
        return list(self.nodes)

    def module(self, layer: str) -> nn.Module:
        assert self.model is not None
        return self.model.get_submodule(layer)


@dataclass
class BuildContext:
    """What applying a knob may read besides its own choices."""

    example_inputs: ModelInputs
    calibration: Sequence[CalibrationBatch]
    nodes: Mapping[str, str]  # layer -> ONNX node name
    ignored: list[str]
    recipe: Recipe


class LayerKnob(abc.ABC):
    """One value per layer. Subclass :class:`TorchKnob` or :class:`OnnxKnob`."""

    name: ClassVar[str]
    #: the value that leaves a layer unchanged (never stored in a candidate)
    default: ClassVar[KnobValue]
    #: the valid values, for error messages
    help: ClassVar[str]
    #: values searched when neither the preset nor the device profile names the knob; empty:
    #: the default only (a knob whose pay-off depends on the hardware waits for a profile to list it)
    values: ClassVar[tuple[KnobValue, ...]] = ()

    @abc.abstractmethod
    def parse(self, value: Any) -> KnobValue | None:
        """The value a YAML file's ``value`` means, or None when it is not valid."""

    def check(self, value: Any, where: str) -> KnobValue:
        parsed = self.parse(value)
        if parsed is None:
            raise UserError(f"{where}: invalid {self.name} value {value!r}; {self.help}")
        return parsed

    def label(self, value: KnobValue) -> str:
        """How a value is written in summaries, baseline names and the report."""
        return f"{self.name} {value}"

    def heat(self, value: KnobValue) -> float:
        """How far from the unchanged layer ``value`` is, in [0, 1] (the report's heatmap)."""
        return 0.0 if value == self.default else 0.5

    def most_aggressive(self, values: list[KnobValue]) -> KnobValue:
        """The value of ``values`` that compresses most (the "floor" baseline takes it)."""
        return min(values, key=lambda v: float(v) if isinstance(v, (int, float)) else 0.0)

    def real_on(self, capabilities: Capabilities) -> tuple[KnobValue, ...] | None:
        """The values that make a backend faster or smaller; None when every value does."""
        return None

    @abc.abstractmethod
    def discover(
        self, found: Discovery, allowed: list[KnobValue]
    ) -> tuple[dict[str, list[KnobValue]], list[str]]:
        """Layer -> the values of ``allowed`` that work there (layers it leaves out are absent),
        and one note per reason something was left out.

        A knob may also return units of its own that are not Conv/Linear layers (a residual
        block, for depth): the space searches them like layers, without an ONNX node."""


class TorchKnob(LayerKnob):
    """Applied to a copy of the torch module before export; recovery runs after it."""

    #: torch knobs apply by stage, then in registry order: a knob that removes modules (depth)
    #: comes after those that look layers up by name
    stage: ClassVar[int] = 0

    @abc.abstractmethod
    def apply(self, model: nn.Module, choices: dict[str, KnobValue], ctx: BuildContext) -> None:
        """Change ``model`` in place; ``choices`` holds only the layers set to a non-default value."""

    def finish(self, model: nn.Module) -> None:
        """Make the change permanent once recovery is done (e.g. fold weight masks)."""


class OnnxKnob(LayerKnob):
    """A pass over the exported graph."""

    @abc.abstractmethod
    def apply(self, src: Path, dst: Path, choices: dict[str, KnobValue], ctx: BuildContext) -> bool:
        """Write ``src`` with ``choices`` applied to ``dst``; False when there was nothing to do."""
