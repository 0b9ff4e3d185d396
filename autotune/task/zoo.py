"""Hand-written reference architectures (no torchvision) used by the demo, tests and benchmarks.

Each model covers a structure the compression passes must handle: residual adds and a
depthwise conv (``DigitsNet``, ``resnet18``), channel concatenation (``ConcatNet``), plain
Linear stacks (``MLP``), attention with 3-D MatMuls (``TinyTransformer``), channel split +
shuffle (``ShuffleNet``, which torch-pruning cannot trace) and depthwise + squeeze-excite +
hardswish blocks (``MobileNetV3``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) followed by BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 Conv-BN, identity or 1x1-projection shortcut, ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class InvertedResidual(nn.Module):
    """MobileNetV2-style block: 1x1 expand, depthwise 3x3 (groups=channels), 1x1 project, add."""

    def __init__(self, channels: int, expand: int = 2) -> None:
        super().__init__()
        hidden = channels * expand
        self.expand = _conv_bn(channels, hidden, kernel=1)
        self.dw = _conv_bn(hidden, hidden, kernel=3, groups=hidden)
        self.project = _conv_bn(hidden, channels, kernel=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.expand(x))
        out = self.relu(self.dw(out))
        return x + self.project(out)


class DigitsNet(nn.Module):
    """Small residual CNN for 1x32x32 digits (the demo model).

    Layout for ``width=w``: Conv-BN-ReLU stem (w ch, 32x32), stage 1 = basic block (w, 32x32),
    stage 2 = strided basic block (2w, 16x16) + depthwise inverted-residual block, stage 3 =
    strided basic block (4w, 8x8), global average pool, Linear ``fc``. About 52 M MACs at
    ``width=32`` (~1.2 ms FP32 onnxruntime, batch 1, one thread, on an AMD EPYC core); conv
    compute dominates, so halving the width cuts latency by more than half.
    """

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        if width % 8:
            raise ValueError(f"DigitsNet width must be a multiple of 8, got {width}")
        w = width
        self.stem = nn.Sequential(*_conv_bn(1, w, 3), nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, stride=2), InvertedResidual(2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class ResNet18(nn.Module):
    """ResNet-18 (3x224x224 by default), parameter names identical to torchvision's;
    ``width`` is the first stage's channel count (64 in torchvision)."""

    def __init__(self, num_classes: int = 1000, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        w = self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(w, 2)
        self.layer2 = self._make_layer(2 * w, 2, stride=2)
        self.layer3 = self._make_layer(4 * w, 2, stride=2)
        self.layer4 = self._make_layer(8 * w, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)
        _init_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [BasicBlock(self.inplanes, planes, stride)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, width: int = 64, in_channels: int = 3) -> ResNet18:
    """A randomly initialised ResNet-18 (BasicBlock, [2, 2, 2, 2]), torchvision layer names."""
    return ResNet18(num_classes, width, in_channels)


class ConcatNet(nn.Module):
    """Small CNN for 1x32x32 whose two branches are joined by ``torch.cat`` then a conv."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(1, 16, 3, stride=2), nn.ReLU(inplace=True))
        self.branch_a = nn.Sequential(*_conv_bn(16, 16, 3), nn.ReLU(inplace=True))
        self.branch_b = nn.Sequential(*_conv_bn(16, 24, 1), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(*_conv_bn(40, 32, 3, stride=2), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.fuse(torch.cat([self.branch_a(x), self.branch_b(x)], dim=1))
        return self.fc(torch.flatten(self.pool(x), 1))


class MLP(nn.Module):
    """Linear-heavy MLP: ``depth`` hidden Linear+ReLU layers, then a Linear ``fc`` head."""

    def __init__(
        self, in_features: int = 64, hidden: int = 256, depth: int = 3, num_classes: int = 10
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_features
        for _ in range(depth):
            layers += [nn.Linear(dim, hidden), nn.ReLU(inplace=True)]
            dim = hidden
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(torch.flatten(x, 1)))


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out Linear layers (no fused kernels)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, s, d))


class TransformerBlock(nn.Module):
    """Pre-norm encoder block: x + attn(ln1(x)), then x + fc2(gelu(fc1(ln2(x))))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    """Transformer encoder over (batch, seq_len, dim) inputs; mean-pool, LayerNorm, Linear head.

    The input is 3-D, so every Linear inside the blocks exports to ONNX as MatMul (+Add).
    """

    def __init__(
        self, seq_len: int = 16, dim: int = 64, heads: int = 4, depth: int = 2, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.dim = dim
        self.pos = nn.Parameter(torch.zeros(1, seq_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x + self.pos)
        return self.head(self.norm(x).mean(dim=1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (b, g, c/g, h, w) -> transpose -> (b, c, h, w)."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits the channels in half; stride 2 runs both branches."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                *_conv_bn(cin, cin, 3, stride, groups=cin), *_conv_bn(cin, half, 1), nn.ReLU(inplace=True)
            )
        inner = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            *_conv_bn(inner, half, 1),
            nn.ReLU(inplace=True),
            *_conv_bn(half, half, 3, stride, groups=half),
            *_conv_bn(half, half, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.branch2(b)], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNet(nn.Module):
    """ShuffleNetV2-like CNN: stem, two stages of shuffle units, 1x1 head conv, Linear ``fc``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, w: int = 48) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, 24, 3, stride=2), nn.ReLU(inplace=True))
        self.stage2 = nn.Sequential(ShuffleUnit(24, w, stride=2), ShuffleUnit(w, w))
        self.stage3 = nn.Sequential(ShuffleUnit(w, 2 * w, stride=2), ShuffleUnit(2 * w, 2 * w))
        self.head = nn.Sequential(*_conv_bn(2 * w, 128, 1), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stage3(self.stage2(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global pool, 1x1 reduce, ReLU, 1x1 expand, hardsigmoid gate."""

    def __init__(self, channels: int, reduce: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, max(8, channels // reduce), 1)
        self.expand = nn.Conv2d(self.reduce.out_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * nn.functional.hardsigmoid(self.expand(s))


class MobileBlock(nn.Module):
    """MobileNetV3 block: 1x1 expand, depthwise k x k, optional SE, 1x1 project; hardswish."""

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int, se: bool) -> None:
        super().__init__()
        self.expand = nn.Sequential(*_conv_bn(cin, hidden, 1), nn.Hardswish())
        self.dw = nn.Sequential(*_conv_bn(hidden, hidden, kernel, stride, groups=hidden), nn.Hardswish())
        self.se = SqueezeExcite(hidden) if se else nn.Identity()
        self.project = _conv_bn(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        return x + out if self.residual else out


class MobileNetV3(nn.Module):
    """MobileNetV3-small-like CNN: hardswish stem, depthwise/SE/hardswish blocks, Linear head;
    ``scale`` multiplies every block's channels."""

    #: (hidden, out, kernel, stride, squeeze-excite) per block
    BLOCKS = ((48, 24, 3, 2, True), (72, 24, 3, 1, False), (96, 40, 5, 2, True), (120, 40, 5, 1, True))

    def __init__(self, in_channels: int = 1, num_classes: int = 10, scale: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, 16, 3, stride=2), nn.Hardswish())
        blocks, cin = [], 16
        for hidden, cout, kernel, stride, se in self.BLOCKS:
            hidden, cout = hidden * scale, cout * scale
            blocks.append(MobileBlock(cin, hidden, cout, kernel, stride, se))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn(cin, 160, 1), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(160, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, as torchvision), unit-gamma / zero-beta BatchNorm."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
