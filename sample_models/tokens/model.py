"""Multi-input token encoder for digits seen as pixel-token sequences.

Inputs: ``input_ids`` int64 (N, 64), token ids 0..16 (pixel values) and
``PAD`` = 17; ``attention_mask`` int64 (N, 64), 1 for real tokens and 0 for
padding. Outputs: ``logits`` (N, 10) and ``embedding`` (N, 32), the
L2-normalised mean of the final encoder states over the unmasked tokens.

The mask enters attention as an additive bias ``(1 - mask) * -1e9``. That
large-negative constant is deliberate: it is the pattern INT8 calibration has
to cope with (a naive min/max observer would spend the whole range on it).

Self-contained (imports only torch): edgekit loads this file by path.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SEQ_LEN = 64
VOCAB_SIZE = 18
PAD = 17
MASK_BIAS = -1e9


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention from Linear layers and matmuls, with an additive padding bias."""

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

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``bias`` (N, 1, 1, T) is 0 for real keys and -1e9 for padded keys."""
        q, k, v = self.split_heads(self.q(x)), self.split_heads(self.k(x)), self.split_heads(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale + bias
        context = torch.matmul(torch.softmax(scores, dim=-1), v)  # (N, H, T, D/H)
        return self.out(context.transpose(1, 2).flatten(2))


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MaskedSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class DigitsTokenEncoder(nn.Module):
    """Token + learned position embeddings -> 2 masked encoder blocks -> masked mean -> (logits, embedding)."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, dim, padding_idx=PAD)
        self.pos = nn.Parameter(torch.zeros(1, SEQ_LEN, dim))
        # Token and position embeddings start at the same small scale. With
        # nn.Embedding's default N(0, 1) the position signal, which is what
        # tells pixels apart here, is drowned out (about 80% vs 94% accuracy).
        nn.init.trunc_normal_(self.embed.weight, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()  # nn.Embedding zeroes the padding row only in its default init
        self.blocks = nn.ModuleList([EncoderBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits, embedding)`` for (N, 64) ``input_ids`` and ``attention_mask``."""
        mask = attention_mask.to(torch.float32)  # explicit cast, so no converter has to promote int64 * float
        bias = ((1.0 - mask) * MASK_BIAS)[:, None, None, :]  # (N, 1, 1, T), broadcast over heads and queries
        h = self.embed(input_ids) + self.pos
        for block in self.blocks:
            h = block(h, bias)
        h = self.norm(h)
        weights = mask.unsqueeze(-1)  # (N, T, 1)
        # clamp: a fully padded row yields a zero vector instead of NaN.
        pooled = (h * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        logits = self.head(pooled)
        # L2 normalisation written with rsqrt rather than F.normalize, which
        # lowers to linalg_vector_norm that not every converter supports.
        embedding = pooled * torch.rsqrt((pooled * pooled).sum(dim=-1, keepdim=True).clamp_min(1e-12))
        # A plain tuple, not a NamedTuple: litert-torch cannot flatten
        # NamedTuple outputs ("'type' object is not iterable").
        return logits, embedding


def create() -> nn.Module:
    """A freshly initialised model (load ``weights.safetensors`` into it)."""
    return DigitsTokenEncoder()
