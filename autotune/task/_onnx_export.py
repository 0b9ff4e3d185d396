"""torch -> ONNX export, and the map from torch layer names to ONNX nodes.

The legacy (TorchScript) exporter names nodes after module scopes
(``/layer1/layer1.0/conv1/Conv``), which gives an exact per-layer mapping. Two things hide a
layer from a naive reading of the graph: the exporter stores equal tensors once and feeds the
other users through an ``Identity`` of the first (zero-initialised last BatchNorms make every
residual block's last conv weight equal, in timm's ResNets, RegNets and RepViTs), and a node
whose scope is lost is still known by its weight initializer's name (``fc.weight``).
"""

from __future__ import annotations

import warnings
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import torch

from autotune.inputs import default_names

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def input_names(n: int) -> list[str]:
    """ONNX input names of ``n`` positional inputs (dict inputs keep their keys)."""
    return default_names(n)


def export_onnx(model: torch.nn.Module, example_inputs: ModelInputs, path: Path) -> None:
    """Export with a dynamic batch axis so ``evaluate`` can run any batch size.

    Dict inputs are passed as keyword arguments and name the ONNX inputs. The exporter binds
    them in the order of ``forward``'s parameters, which a Task's dict already follows
    (``inputs.ordered_for``), so each name lands on its own tensor; one the model never reads
    is dropped from the graph (the runner and the measurement feed by name and skip it).
    """
    args: tuple[torch.Tensor, ...] = ()
    kwargs: dict[str, torch.Tensor] | None = None
    if isinstance(example_inputs, dict):
        names, kwargs = list(example_inputs), dict(example_inputs)
    else:
        names, args = input_names(len(example_inputs)), tuple(example_inputs)
    axes = {name: {0: "batch"} for name in [*names, "output"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            model,
            args,
            str(path),
            kwargs=kwargs,
            dynamo=False,
            input_names=names,
            output_names=["output"],
            dynamic_axes=axes,
            opset_version=17,
            do_constant_folding=True,
        )


def scope_to_module(node_name: str) -> str:
    """``/layer2/layer2.0/downsample/downsample.0/Conv`` -> ``layer2.0.downsample.0``.

    A container's child appears as ``<container attr>.<index>``, replacing the container's
    own component; any other component is a child attribute.
    """
    parts: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        else:
            parts.append(part)
    return ".".join(parts)


def constant_tensors(model: onnx.ModelProto) -> dict[str, str]:
    """Constant tensor -> the initializer or ``Constant`` output it is, through ``Identity`` aliases."""
    source = {i.name: i.name for i in model.graph.initializer}
    source.update({o: o for n in model.graph.node if n.op_type == "Constant" for o in n.output})
    for node in model.graph.node:  # topologically sorted: an alias follows what it aliases
        if node.op_type == "Identity" and node.input and node.input[0] in source:
            source[node.output[0]] = source[node.input[0]]
    return source


def weighted_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Conv / Gemm / MatMul nodes whose weight is a constant (an initializer, a ``Constant``, or
    an ``Identity`` of either, which is how the exporter shares equal tensors)."""
    consts = constant_tensors(model)
    return [
        n for n in model.graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in consts
    ]


def layer_nodes(model: onnx.ModelProto, module_names: set[str]) -> dict[str, onnx.NodeProto]:
    """Module name -> its weighted ONNX node (first one if a module is called twice).

    By the node's scope first; a node whose scope names no module is matched by its weight's
    initializer name (``fc.weight`` -> ``fc``), which the exporter keeps when nothing folded it.
    """
    consts = constant_tensors(model)
    mapping: dict[str, onnx.NodeProto] = {}
    unscoped = []
    for node in weighted_nodes(model):
        name = scope_to_module(node.name)
        if name in module_names:
            mapping.setdefault(name, node)
        else:
            unscoped.append(node)
    for node in unscoped:
        weight = consts[node.input[1]]
        name = weight.removesuffix(".weight") if weight.endswith(".weight") else ""
        if name in module_names:
            mapping.setdefault(name, node)
    return mapping


def output_nodes(model: onnx.ModelProto) -> set[str]:
    """Weighted nodes that produce a graph output without another weighted node in between.

    Their output channels are the model's interface (class logits, say): never prune them.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    found: set[str] = set()
    seen: set[str] = set()
    queue = deque(o.name for o in model.graph.output)
    while queue:
        tensor = queue.popleft()
        node = producer.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in WEIGHTED_OPS:
            found.add(node.name)
            continue
        queue.extend(node.input)
    return found
