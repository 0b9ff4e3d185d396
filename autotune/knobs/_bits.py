"""Bit-width: per-layer precision of the exported graph (32, 16, 8 or 4 bits).

Applied by :func:`~autotune.knobs._quantize.quantize_model` as the candidate's quantization
recipe says: int8 static QDQ, int4 weight-only MatMulNBits (MatMul only), fp16 for GPUs.
Discovery drops the bit-widths the quantizer fails on, with one note per reason.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from autotune._util import error_line
from autotune.knobs._base import BuildContext, Discovery, KnobValue, OnnxKnob, name_layers
from autotune.knobs._quantize import CalibrationBatch, quantize_model

if TYPE_CHECKING:
    from autotune.devices import Capabilities


class Bits(OnnxKnob):
    name = "bits"
    default = 32
    help = "one of 32, 16, 8, 4"

    def parse(self, value: Any) -> KnobValue | None:
        return int(value) if value in (32, 16, 8, 4) and not isinstance(value, bool) else None

    def label(self, value: KnobValue) -> str:
        return {32: "fp32", 16: "fp16"}.get(int(value), f"int{int(value)}")

    def heat(self, value: KnobValue) -> float:
        return {32: 0.0, 16: 0.35, 8: 0.7, 4: 1.0}.get(int(value), 0.5)

    def real_on(self, capabilities: Capabilities) -> tuple[KnobValue, ...] | None:
        return capabilities.bits

    def discover(
        self, found: Discovery, allowed: list[KnobValue]
    ) -> tuple[dict[str, list[KnobValue]], list[str]]:
        wanted = {layer: bits_for(node.op_type, allowed) for layer, node in found.nodes.items()}
        if found.model is None:  # an ONNX task: its graph is what the user ships, taken as it is
            return {layer: list[KnobValue](b) for layer, b in wanted.items()}, []
        by_node = {found.nodes[layer].name: b for layer, b in wanted.items()}
        ok, notes = quantizable(found.onnx_path, by_node, found.calibration)
        return {
            layer: list[KnobValue](ok.get(node.name) or [32]) for layer, node in found.nodes.items()
        }, notes

    def apply(self, src: Path, dst: Path, choices: dict[str, KnobValue], ctx: BuildContext) -> bool:
        bits = {ctx.nodes[layer]: int(b) for layer, b in choices.items()}
        if not bits and ctx.recipe.optimizer == "none":
            return False
        quantize_model(src, dst, bits, ctx.calibration, ctx.recipe)
        return True


def bits_for(op: str, allowed: list[KnobValue]) -> list[int]:
    # int4 is weight-only MatMulNBits: only MatMul nodes with a constant weight get it
    return [int(b) for b in allowed if b != 4 or op == "MatMul"]


def quantizable(
    onnx_path: Path, bits_by_node: dict[str, list[int]], calibration: Sequence[CalibrationBatch]
) -> tuple[dict[str, list[int]], list[str]]:
    """Drop bit-widths the quantizer fails on: all nodes at once first, node by node on failure."""
    notes: list[str] = []
    out = {node: list(bits) for node, bits in bits_by_node.items()}
    batches = list(calibration[:1])
    wanted = sorted({b for bits in out.values() for b in bits if b != 32})
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "probe.onnx"

        def fails(nodes: list[str], bits: int) -> str | None:
            try:
                quantize_model(onnx_path, dst, dict.fromkeys(nodes, bits), batches)
                onnx.checker.check_model(str(dst))
            except Exception as exc:  # noqa: BLE001 - the reason goes into the note
                return error_line(exc, 160)
            return None

        for bits in wanted:
            nodes = [n for n, b in out.items() if bits in b]
            if not nodes or fails(nodes, bits) is None:
                continue
            broken: dict[str, list[str]] = {}
            for node in nodes:
                why = fails([node], bits)
                if why is not None:
                    broken.setdefault(why, []).append(node)
            for why, names in broken.items():
                for n in names:
                    out[n].remove(bits)
                notes.append(f"{bits}-bit not searched in {name_layers(names)}: quantization fails ({why})")
            if not broken:  # each node alone works, together they do not: be conservative
                for n in nodes:
                    out[n].remove(bits)
                notes.append(f"{bits}-bit not searched: quantizing all layers together fails")
    return out, notes
