"""The base of every edgekit config model: strict and frozen.

Its own module so that any config (profiles, compression stages, backend
options) can build on it without importing the others.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def merged(self, override: Self | None) -> Self:
        """A copy with every field set in ``override`` replacing ours (layered configs: profile, then build config)."""
        if override is None:
            return self
        # getattr, not model_dump: nested models must stay models, not become dicts.
        return self.model_copy(update={name: getattr(override, name) for name in override.model_fields_set})


def validation_problems(err: ValidationError) -> str:
    """One clause per problem, naming the key path, e.g. ``unknown key 'budgets.max_sise_mb'``."""
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")  # our own validators' messages stand alone
        lines.append(f"unknown key '{where}'" if item["type"] == "extra_forbidden" else f"'{where}': {message}")
    return "; ".join(lines)
