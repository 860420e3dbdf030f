"""``options`` of Core ML artifacts in a profile, e.g. ``options = {palettize = 4}``. Light: pydantic only."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from edgekit.strict import StrictModel

# coremltools defaults to 2048, which left every matrix of the sample Transformer
# (32x32, 32x64) float and 2 of 5 CNN weight tensors. 512 compresses matrices of
# 512+ elements; smaller tensors (biases, a 1-channel first conv) save too little
# to be worth their accuracy cost.
DEFAULT_WEIGHT_THRESHOLD = 512
PALETTE_BITS = (1, 2, 3, 4, 6, 8)


class Options(StrictModel):
    """How Core ML candidates compress their weights (strict types: TOML's own, no coercion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    weight_threshold: int = Field(DEFAULT_WEIGHT_THRESHOLD, ge=0, description=(
        f"int >= 0: tensors with at most this many elements stay float (default {DEFAULT_WEIGHT_THRESHOLD})"))
    palettize: int | None = Field(None, description=f"bits in {PALETTE_BITS}: palettize instead of linear quantization")
    prune: float | None = Field(None, gt=0, lt=1, description="fraction in (0, 1): magnitude-prune to this sparsity first "
                                "(sparse storage)")
    block_size: int = Field(32, ge=1, description="int: int4 per-block size along the input dim (default 32)")
    group_size: int = Field(16, ge=1, description="int: channels sharing one look-up table for iOS 18 palettization "
                            "(default 16)")
    compute_precision: Literal["fp16", "fp32"] = Field("fp16", description="'fp16' | 'fp32': compute precision of "
                                                       "compressed models (default fp16)")
    per_channel_scale: bool = Field(False, description="bool: iOS 18 palettization with per-channel scales "
                                    "(default false, see compress.py)")

    @field_validator("palettize")
    @classmethod
    def _palette_bits(cls, bits: int | None) -> int | None:
        if bits is not None and bits not in PALETTE_BITS:
            raise ValueError(f"palettize takes {PALETTE_BITS} bits")
        return bits

    def problem(self, precision: str) -> str | None:
        """Why these options cannot apply to an artifact of ``precision``, or None."""
        if self.palettize is not None and precision in ("fp32", "fp16"):
            return f"options.palettize applies to int8/int4 requests, not {precision}"
        return None
