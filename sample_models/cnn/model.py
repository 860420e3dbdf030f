"""Small CNN for 8x8 handwritten digits: input (N, 1, 8, 8) in [0, 1], output (N, 10) logits.

Self-contained (imports only torch): edgekit loads this file by path.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (same padding) + BatchNorm + ReLU; the bias is redundant before BN."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU x2, pool, Conv-BN-ReLU, pool, flatten, Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(1, 16),
            conv_bn_relu(16, 32),
            # The stride is passed explicitly: torch.export of max_pool with a
            # default stride breaks the Core ML converter.
            nn.MaxPool2d(kernel_size=2, stride=2),  # 8x8 -> 4x4
            conv_bn_relu(32, 64),
            nn.MaxPool2d(kernel_size=2, stride=2),  # 4x4 -> 2x2
        )
        self.classifier = nn.Linear(64 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (N, 1, 8, 8) images."""
        # flatten(1) keeps the batch dimension symbolic; x.shape arithmetic
        # would be traced into integer ops some converters reject.
        return self.classifier(self.features(x).flatten(1))


def create() -> nn.Module:
    """A freshly initialised model (load ``weights.safetensors`` into it)."""
    return DigitsCNN()
