"""``options`` of ExecuTorch artifacts in a profile, e.g. ``options = {max_batch = 1}``. Light: pydantic only."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from edgekit.strict import StrictModel

DEFAULT_MAX_BATCH = 8


class Options(StrictModel):
    """How the ``.pte`` programs are planned (strict types: TOML's own, no coercion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_batch: int = Field(DEFAULT_MAX_BATCH, ge=1, le=1024, description=(
        f"int in 1..1024: the largest batch the program accepts; ExecuTorch plans activation memory for it up front, "
        f"so a batch-1 app saves RAM with 1 (default {DEFAULT_MAX_BATCH}; larger batches run in chunks)"))
