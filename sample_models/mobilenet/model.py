"""MobileNetV2-style net for digits upscaled to 32x32: input (N, 1, 32, 32) in [0, 1], output (N, 10) logits.

Inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 linear projection)
with channel counts that are multiples of 8, so structured pruning with
``round_to=8`` and vectorised kernels both have clean shapes.

Self-contained (imports only torch): edgekit loads this file by path.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Conv (no bias: BN follows) + BatchNorm (+ ReLU6)."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block; adds the input back when the shape is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(in_channels, hidden, 1))  # expand
        layers += [
            conv_bn(hidden, hidden, 3, stride=stride, groups=hidden),  # depthwise
            conv_bn(hidden, out_channels, 1, act=False),  # linear bottleneck: no activation
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


# (expansion, output channels, repeats, stride of the first repeat)
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),  # 16x16
    (6, 24, 2, 1),  # 16x16
    (6, 32, 3, 1),  # 16x16: most of the MACs, so host latency is not just per-call overhead
    (6, 64, 3, 2),  # 8x8
    (6, 96, 1, 2),  # 4x4
)


class DigitsMobileNet(nn.Module):
    """Stem conv (stride 2) -> inverted residual stages -> 1x1 conv -> global average pool -> Linear."""

    def __init__(self, num_classes: int = 10, stem: int = 16, last: int = 192) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(1, stem, 3, stride=2)]  # 32x32 -> 16x16
        channels = stem
        for expand, out_channels, repeats, stride in STAGES:
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, expand))
                channels = out_channels
        layers.append(conv_bn(channels, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (N, 1, 32, 32) images."""
        # torch.mean over the spatial dims: a plain reduction that every
        # converter maps to global average pooling.
        return self.classifier(torch.mean(self.features(x), dim=(2, 3)))


def create() -> nn.Module:
    """A freshly initialised model (load ``weights.safetensors`` into it)."""
    return DigitsMobileNet()
