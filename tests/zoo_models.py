"""Public architectures from ``timm`` and ``transformers`` that autotune did not grow up with.

Random weights, ten classes, 64x64 images (16 token ids and an attention mask, by keyword, for
text). The task scores agreement
with the FP32 model's predictions on fixed random inputs, so it judges the pipeline (discovery,
build, export, measurement), not accuracy. Used by ``tests/test_zoo_models.py`` and
``benchmarks/zoo.py``.

``timm`` and ``transformers`` import torchvision, whose compiled operators do not load beside
the CPU torch wheel this project pins; model definitions never call them, so imports skip
registering fake kernels for ``torchvision::`` operators (:func:`torchvision_fakes_skipped`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autotune.inputs import call_model, first_output
from autotune.space._space import SearchSpace
from autotune.task._task import Runner, Task

if TYPE_CHECKING:
    from autotune.inputs import ModelInputs

IMAGE = (3, 64, 64)
TOKENS = 16  # sequence length of the text models
VOCAB = 1000


@contextlib.contextmanager
def torchvision_fakes_skipped() -> Iterator[None]:
    """Importing torchvision (timm and transformers both do) without registering fake kernels
    for ``torchvision::`` operators, which do not load beside the CPU torch wheel."""
    import torch.library

    original = torch.library.register_fake

    def skip_torchvision(op: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(op, str) and op.startswith("torchvision::"):
            return lambda fn=None, *a, **k: fn  # used as a decorator, with or without a function
        return original(op, *args, **kwargs)

    torch.library.register_fake = skip_torchvision  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.library.register_fake = original


@functools.cache
def import_timm() -> ModuleType:
    with torchvision_fakes_skipped():
        import timm
    return timm


@functools.cache
def import_transformers() -> ModuleType:
    with torchvision_fakes_skipped():
        import transformers
        import transformers.image_utils  # what imports torchvision, lazily

    return transformers


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str  # cnn, mobile, hybrid, vit, text
    build: Callable[[], nn.Module]
    text: bool = False
    quick: bool = False  # in the CI subset
    residual: bool = True  # has residual blocks for depth to drop
    kwargs: dict[str, Any] = field(default_factory=dict)


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return import_timm().create_model(name, pretrained=False, num_classes=10, **kwargs)

    return build


def _hf_bert() -> nn.Module:
    t = import_transformers()
    config = t.BertConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
        num_labels=10,
    )
    with torchvision_fakes_skipped():  # the model classes load lazily
        return t.BertForSequenceClassification(config)


def _hf_distilbert() -> nn.Module:
    t = import_transformers()
    config = t.DistilBertConfig(
        vocab_size=VOCAB, dim=128, n_layers=4, n_heads=4, hidden_dim=256, max_position_embeddings=64
    )
    config.num_labels = 10
    with torchvision_fakes_skipped():
        return t.DistilBertForSequenceClassification(config)


def _hf_vit() -> nn.Module:
    t = import_transformers()
    config = t.ViTConfig(
        image_size=64,
        patch_size=8,
        hidden_size=192,
        num_hidden_layers=4,
        num_attention_heads=3,
        intermediate_size=384,
        num_labels=10,
    )
    with torchvision_fakes_skipped():
        return t.ViTForImageClassification(config)


def _z(name: str, family: str, quick: bool = False, residual: bool = True, **kwargs: Any) -> ZooModel:
    return ZooModel(name, family, _timm(name, **kwargs), quick=quick, residual=residual, kwargs=kwargs)


ZOO: list[ZooModel] = [
    # CNNs
    _z("resnet18", "cnn"),
    _z("resnet26d", "cnn"),  # ResNet-D: avg-pool downsample shortcuts
    _z("regnetx_002", "cnn", quick=True),
    _z("regnety_002", "cnn"),
    _z("convnext_atto", "cnn"),
    _z("hgnetv2_b0", "cnn"),
    _z("densenet121", "cnn", residual=False),  # concatenation, no residual adds: nothing for depth
    # mobile
    _z("mobilenetv2_050", "mobile"),
    _z("mobilenetv3_small_050", "mobile", quick=True),
    _z("mobilenetv4_conv_small", "mobile"),
    _z("efficientnet_b0", "mobile"),
    _z("tinynet_e", "mobile"),
    _z("ghostnet_050", "mobile"),
    _z("repvit_m0_9", "mobile", quick=True),
    _z("mnasnet_050", "mobile"),
    _z("lcnet_050", "mobile", residual=False),  # no skip connections
    _z("mobileone_s0", "mobile"),
    _z("fasternet_t0", "mobile"),
    # hybrid conv-attention
    _z("efficientvit_b0", "hybrid"),
    _z("efficientvit_m0", "hybrid"),
    _z("fastvit_t8", "hybrid"),
    _z("mobilevitv2_050", "hybrid"),
    _z("mobilevit_xxs", "hybrid"),
    _z("edgenext_xx_small", "hybrid"),
    _z("levit_128s", "hybrid", img_size=64),
    _z("efficientformerv2_s0", "hybrid", img_size=64),
    # vision transformers
    _z("deit_tiny_patch16_224", "vit", quick=True, img_size=64),
    _z("vit_tiny_patch16_224", "vit", img_size=64),
    ZooModel("hf_vit", "vit", _hf_vit),
    # text encoders (token ids)
    ZooModel("hf_bert", "text", _hf_bert, text=True, quick=True),
    ZooModel("hf_distilbert", "text", _hf_distilbert, text=True),
]
BY_NAME = {m.name: m for m in ZOO}


def example_batch(entry: ZooModel, n: int, seed: int = 0) -> ModelInputs:
    """``n`` images, or (text) ``n`` rows of token ids with an attention mask, by keyword as
    Hugging Face models take them; the last rows are padded so that the mask matters."""
    g = torch.Generator().manual_seed(seed)
    if not entry.text:
        return (torch.randn(n, *IMAGE, generator=g),)
    ids = torch.randint(0, VOCAB, (n, TOKENS), generator=g)
    mask = torch.ones(n, TOKENS, dtype=torch.int64)
    mask[n // 2 :, TOKENS // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _rows(inputs: ModelInputs, start: int, stop: int) -> ModelInputs:
    if isinstance(inputs, dict):
        return {k: v[start:stop] for k, v in inputs.items()}
    return tuple(v[start:stop] for v in inputs)


def zoo_task(entry: ZooModel, n: int = 16) -> Task:
    """Random-init ``entry``, scored by agreement with its own FP32 predictions on ``n`` inputs."""
    torch.manual_seed(0)
    model = entry.build().eval()
    data = example_batch(entry, n)
    with torch.no_grad():
        reference = first_output(call_model(model, data)).argmax(-1).numpy()

    def evaluate(runner: Runner) -> float:
        out = runner(data) if isinstance(data, dict) else runner(*data)
        return float((out.argmax(-1) == reference).mean() * 100)

    return Task(
        source=model,
        example_inputs=_rows(data, 0, 1),
        evaluate=evaluate,
        calibration=[_numpy(_rows(data, i, i + 8)) for i in range(0, n, 8)],
        name=entry.name,
        metric="agreement",
    )


def _numpy(inputs: ModelInputs) -> Any:
    if isinstance(inputs, dict):
        return {k: v.numpy() for k, v in inputs.items()}
    return tuple(v.numpy() for v in inputs)


#: model -> {knob: layers (or blocks) where it has a real choice}, filled by the zoo test and
#: printed at the end of the session (tests/conftest.py)
SEARCHED: dict[str, dict[str, int]] = {}


def searched_knobs(space: SearchSpace) -> dict[str, int]:
    """Knob -> in how many layers (blocks, for depth) it has more than one value."""
    counts: dict[str, int] = {}
    for layer in space.layers:
        for knob, values in layer.knobs.items():
            if len(values) > 1:
                counts[knob] = counts.get(knob, 0) + 1
    return counts


def describe_knobs(counts: dict[str, int], layers: int | None = None) -> str:
    """``width 12, bits 45, depth 9 blocks`` (of ``layers`` Conv/Linear layers)."""
    parts = [f"{k} {n}" + (" blocks" if k == "depth" else "") for k, n in counts.items()]
    return ", ".join(parts) or "nothing"
