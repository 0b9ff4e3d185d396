"""Task stage: what is searched. A model (torch module or ONNX file), its example inputs, how to
score it, calibration and recovery data.

Public: :class:`Task` and its callables, :func:`onnx_task` (``--model model.onnx``), the ONNX
export and graph helpers every later stage shares, :func:`evaluate_artifact` (the score of a
built artifact, on an onnxruntime session of the very file that was measured) and
:func:`knowledge_distill`, the one distillation loop (the demo's finetune and ``--recover kd``).
:mod:`autotune.task.demo` is the embedded digits demo, :mod:`autotune.task.zoo` the project's
own small architectures.
"""

from autotune.task._distill import knowledge_distill, teacher_outputs
from autotune.task._evaluate import OrtRunner, evaluate_artifact
from autotune.task._onnx_export import (
    WEIGHTED_OPS,
    export_onnx,
    input_names,
    layer_nodes,
    output_nodes,
    scope_to_module,
    weighted_nodes,
)
from autotune.task._onnx_task import onnx_task
from autotune.task._task import Batch, Evaluate, Finetune, Runner, Task

__all__ = [
    "WEIGHTED_OPS",
    "Batch",
    "Evaluate",
    "Finetune",
    "OrtRunner",
    "Runner",
    "Task",
    "evaluate_artifact",
    "export_onnx",
    "input_names",
    "knowledge_distill",
    "layer_nodes",
    "onnx_task",
    "output_nodes",
    "scope_to_module",
    "teacher_outputs",
    "weighted_nodes",
]
