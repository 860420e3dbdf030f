"""Small Transformer encoder for 8x8 digits: input (N, 1, 8, 8) in [0, 1], output (N, 10) logits.

The 8 image rows are 8 tokens of 8 features. Attention is written out by hand
(q/k/v Linear, matmul, softmax, matmul, out Linear) rather than using
``nn.MultiheadAttention``: every converter sees plain ops, and structured
pruning can remove heads.

Self-contained (imports only torch): edgekit loads this file by path.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NUM_TOKENS = 8  # image rows
TOKEN_FEATURES = 8  # pixels per row


class SelfAttention(nn.Module):
    """Multi-head self-attention from Linear layers and matmuls."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)  # a Python float: a constant in every exported graph
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, H, T, D/H); unflatten splits a static dim, so the batch stays symbolic."""
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(self.q(x)), self.split_heads(self.k(x)), self.split_heads(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        context = torch.matmul(torch.softmax(scores, dim=-1), v)  # (N, H, T, D/H)
        return self.out(context.transpose(1, 2).flatten(2))


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DigitsTransformer(nn.Module):
    """Row tokens -> Linear embedding + learned positions -> 2 encoder blocks -> mean pool -> Linear."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(TOKEN_FEATURES, dim)
        self.pos = nn.Parameter(torch.zeros(1, NUM_TOKENS, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (N, 1, 8, 8) images."""
        # (N, 1, 8, 8) -> (N, 8, 8): merge the channel and row dims, which
        # are constants, instead of computing a shape from x.shape.
        tokens = self.embed(x.flatten(1, 2)) + self.pos
        h = self.norm(self.blocks(tokens))
        return self.head(h.mean(dim=1))


def create() -> nn.Module:
    """A freshly initialised model (load ``weights.safetensors`` into it)."""
    return DigitsTransformer()
