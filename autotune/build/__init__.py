"""Build stage (the Builder): a candidate -> the deployable ONNX artifact, content-hashed.

Pruning on a copy of the model, recovery (BatchNorm re-estimation, distillation or the task's
own ``finetune``; the methods are registered in :data:`RECOVERIES`), ONNX export and per-layer
quantization.
"""

from autotune.build._builder import Artifact, ArtifactBuilder
from autotune.build._recover import (
    FINAL_RECOVERY,
    RECOVERIES,
    Ran,
    Recovery,
    RecoveryMethod,
    distill,
    recover,
    recovery_batches,
)

__all__ = [
    "FINAL_RECOVERY",
    "RECOVERIES",
    "Artifact",
    "ArtifactBuilder",
    "Ran",
    "Recovery",
    "RecoveryMethod",
    "distill",
    "recover",
    "recovery_batches",
]
