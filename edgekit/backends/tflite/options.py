"""``options`` of TFLite artifacts in a profile, e.g. ``options = {integer_only = true}``. Light: pydantic only."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from edgekit.strict import StrictModel


class Options(StrictModel):
    """Constraints on the TFLite candidates (strict types: TOML's own, no coercion)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    integer_only: bool = Field(False, description=(
        "true or false: int8 candidates must compute in integer arithmetic (drops the weight-only and dynamic-range "
        "recipes; for NPU / DSP delegates that run only integer kernels)"))

    def problem(self, precision: str) -> str | None:
        """Why these options cannot apply to an artifact of ``precision``, or None."""
        if self.integer_only and precision != "int8":
            return f"integer_only applies to int8 requests, not {precision}"
        return None
