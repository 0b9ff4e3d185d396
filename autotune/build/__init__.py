"""Build stage (the Builder): a candidate -> the deployable ONNX artifact, content-hashed.

Pruning on a copy of the model, recovery (BatchNorm re-estimation, distillation or the task's
own ``finetune``), ONNX export and per-layer quantization.
"""

from autotune.build._builder import Artifact, ArtifactBuilder
from autotune.build._recover import MODES, Recovery, distill, recover, recovery_batches

__all__ = ["MODES", "Artifact", "ArtifactBuilder", "Recovery", "distill", "recover", "recovery_batches"]
