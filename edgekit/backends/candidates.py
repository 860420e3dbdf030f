"""What every backend does with the candidates its recipes made, written once.

- ``nothing_stored_in``: a "quantized" candidate whose weight census shows
  nothing in its precision never ships (the quantizer found nothing it
  handles); the reason reads the same for every format.
- ``time_against_fp32``: the FP32 program and every candidate timed in one
  interleaved run (each format's ``fp32_timing`` module), so "slower than
  FP32" is judged on a shared denominator; a timing failure costs the figure,
  never the candidates.
- ``finished``: the build's notes and timings attached to each candidate.
- ``none_made``: the error when no recipe produced a candidate.

Format-neutral: the format-specific parts (recipes, census, runtime) come in
as arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgekit.artifact import Artifact
from edgekit.errors import EdgekitError, UnsupportedModelError

# The storage each precision's weights must show in the census for the candidate to be what it claims.
STORED_AS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "dynamic-int8": "int8", "int4": "int4"}


def nothing_stored_in(precision: str, by_precision: Mapping[str, int]) -> str | None:
    """Why a ``precision`` candidate must be dropped (no weight stored in it), or None when some weight is."""
    expected = STORED_AS[precision]
    if by_precision.get(expected, 0) > 0:
        return None
    stored = ", ".join(f"{kind} {count}" for kind, count in sorted(by_precision.items())) or "no weights"
    return f"nothing quantized: no weight is stored in {expected} ({stored})"


def time_against_fp32(reference: Path, candidates: Sequence[Path], feeds: Mapping[str, np.ndarray],
                      timing: ModuleType) -> list[dict[str, Any]]:
    """Each candidate's ``vs_fp32`` record from one interleaved run of ``reference`` (FP32) and ``candidates``.

    ``timing`` is the format's ``fp32_timing`` module (``interleaved(paths,
    feeds)``, ``comparison(own, fp32)``). On failure every candidate gets
    ``{"error": reason}`` instead: selection then falls back to the build's
    separate FP32 latency, and the candidates, which already ran, stay.
    """
    try:
        results = timing.interleaved([reference, *candidates], feeds)
    except (EdgekitError, RuntimeError, ValueError) as exc:
        reason = exc.problem if isinstance(exc, EdgekitError) else f"{type(exc).__name__}: {str(exc)[:300]}"
        return [{"error": reason} for _ in candidates]
    return [timing.comparison(own, results[0]) for own in results[1:]]


def finished(candidates: Sequence[Artifact], notes: Sequence[str], timings: Sequence[dict[str, Any] | None],
             **extra: Any) -> list[Artifact]:
    """``candidates`` with the build's ``notes``, their ``vs_fp32`` timing (when timed) and ``extra`` details."""
    return [dataclasses.replace(artifact, details={**artifact.details, "notes": list(notes), **extra,
                                                   **({"vs_fp32": vs} if vs is not None else {})})
            for artifact, vs in zip(candidates, timings, strict=True)]


def none_made(fmt: str, precision: str, target: str, notes: Sequence[str]) -> UnsupportedModelError:
    """The error when every recipe of ``precision`` failed or was dropped, with each recipe's reason."""
    return UnsupportedModelError(
        f"no {precision} {fmt} artifact could be made for target {target}: {'; '.join(notes)}",
        "The model may have no layers this precision applies to; choose another precision or format for this target",
    )
