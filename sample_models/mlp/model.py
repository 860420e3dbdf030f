"""MLP for 8x8 handwritten digits: input (N, 1, 8, 8) in [0, 1], output (N, 10) logits.

Self-contained (imports only torch): edgekit loads this file by path.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """Flatten the 64 pixels, two hidden ReLU layers, Linear to the logits."""

    def __init__(self, hidden: tuple[int, int] = (128, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(64, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (N, 1, 8, 8) images."""
        # flatten(1), not x.reshape(x.shape[0], -1): integer math on x.shape
        # is traced into ops that some converters cannot handle.
        return self.layers(x.flatten(1))


def create() -> nn.Module:
    """A freshly initialised model (load ``weights.safetensors`` into it)."""
    return DigitsMLP()
