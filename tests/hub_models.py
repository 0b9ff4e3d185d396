"""Small timm and Hugging Face transformers, random weights, built offline, and tasks around them.

timm and transformers import torchvision, whose compiled ops do not load beside the CPU torch
wheel (``operator torchvision::nms does not exist`` when it registers their fake kernels). The
model definitions never call those ops, so their fake-kernel registrations are skipped here,
before either library is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.library
from torch import nn

from autotune.inputs import first_output
from autotune.task._task import Runner, Task

_register_fake = torch.library.register_fake


def _skip_torchvision(op: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(op, str) and op.startswith("torchvision::"):
        return lambda fn=None, *a, **k: fn  # used as a decorator: leave the function as it is
    return _register_fake(op, *args, **kwargs)


torch.library.register_fake = _skip_torchvision  # type: ignore[assignment]

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

HEADS = 4  # every model here: 4 heads of 16 over a 64-wide residual stream, 2 blocks


def timm_deit() -> nn.Module:
    """A DeiT-style timm ViT (fused ``qkv``, ``num_heads`` and ``attn_dim``) on 64x64 images."""
    return timm.create_model(
        "deit_tiny_patch16_224",
        pretrained=False,
        num_classes=10,
        img_size=64,
        depth=2,
        embed_dim=64,
        num_heads=HEADS,
        mlp_ratio=2,
    )


def hf_vit() -> nn.Module:
    """A Hugging Face ViT classifier (``q_proj``/``k_proj``/``v_proj``/``o_proj``) on 64x64 images."""
    config = transformers.ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=128,
        image_size=64,
        patch_size=16,
        num_labels=10,
    )
    return transformers.ViTForImageClassification(config)


def hf_bert() -> nn.Module:
    """A Hugging Face BERT classifier (``query``/``key``/``value``, ``all_head_size``) on token ids."""
    config = transformers.BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=128,
        vocab_size=1000,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


IMAGE_MODELS: dict[str, Callable[[], nn.Module]] = {"timm-deit": timm_deit, "hf-vit": hf_vit}


def agreement(model: nn.Module, inputs: torch.Tensor, name: str) -> Task:
    """Scored by agreement with the FP32 model's predictions (the model may return a ModelOutput)."""
    model.eval()
    with torch.no_grad():
        reference = first_output(model(inputs)).argmax(-1).numpy()

    def evaluate(runner: Runner) -> float:
        return float(np.mean(runner(inputs).argmax(-1) == reference) * 100)

    return Task(
        source=model,
        example_inputs=(inputs[:1],),
        evaluate=evaluate,
        calibration=[(inputs[i : i + 16].numpy(),) for i in range(0, len(inputs), 16)],
        name=name,
        metric="agreement",
    )
