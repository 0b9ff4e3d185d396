"""Discovery probes: which knobs really work on this model, decided before any trial runs.

Every probe turns a failure of a dependency (torch-pruning tracing a reshape it cannot follow,
a quantizer choking on a node) into a knob left out and one note naming the layers and why.
Nothing raised by torch-pruning or onnxruntime's quantizers reaches the user from here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
from torch import nn

from autotune._util import error_line
from autotune.compress import check_width_roots, width_groups
from autotune.quantize import CalibrationBatch, quantize_model

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

MAX_NAMED = 4  # layers named in one note before "and N more"


def name_layers(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown if len(names) <= MAX_NAMED else f"{shown} and {len(names) - MAX_NAMED} more"


def width_roots(
    model: nn.Module,
    example_inputs: ModelInputs,
    ignored: list[str],
    candidates: Sequence[str],
    narrowest: float,
) -> tuple[list[str], list[str]]:
    """Group roots whose width can be searched, and one note per reason the others cannot."""
    try:
        roots = [r for r in width_groups(model, example_inputs, ignored) if r in candidates]
    except Exception as exc:  # noqa: BLE001 - a tracing failure rules width out, nothing more
        return [], [f"width not searched: torch-pruning cannot trace the model ({error_line(exc, 160)})"]
    try:
        good, bad = check_width_roots(model, example_inputs, roots, ignored, width=narrowest)
    except Exception as exc:  # noqa: BLE001
        return [], [f"width not searched: torch-pruning fails on this model ({error_line(exc, 160)})"]
    by_reason: dict[str, list[str]] = {}
    for root, why in bad.items():
        by_reason.setdefault(why, []).append(root)
    notes = [
        f"width not searched in {name_layers(sorted(names))}: torch-pruning cannot narrow "
        f"{'it' if len(names) == 1 else 'them'} ({why})"
        for why, names in by_reason.items()
    ]
    return good, notes


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
