"""Quantization coverage: how much of an artifact is really in the precision it claims.

An "int8" file can keep most of its weights in float (recurrent weights an
onnxruntime quantizer skips, a 30k-token embedding table, layers a search
kept float) and still be smaller than FP32. Coverage makes that a number:

- ``weights_share``: the share of weight elements stored at the requested
  precision or below it (int8 and int4 both count for an int8 request; fp16
  and narrower for fp16). Biases and normalisation scales count too, so a
  fully quantized model reaches ~99 %, not 100 %.
- ``fast_share``: of the ops that carry the model's compute (convolutions,
  matrix products, recurrent cells, lookups), the share that runs on the
  format's fast path, where the backend can tell (integer kernels in the
  onnxruntime-optimised graph, XNNPACK-delegated nodes in LiteRT). None when
  not measured. Weight-only recipes keep float compute by design; their
  ``fast_path`` text says so.

A candidate with ``weights_share`` below ``COVERAGE_FLOOR`` is *partial*: the
table and report label it, with the float ops and why each stayed float.
No torch, no runtime here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COVERAGE_FLOOR = 0.90

# Bits per stored element, for "at the requested precision or below".
BITS = {"fp64": 64, "fp32": 32, "int32": 32, "fp16": 16, "bf16": 16, "int16": 16, "int8": 8, "uint8": 8,
        "int4": 4, "uint4": 4, "int2": 2, "uint1": 1}
# Requested precision -> the widest storage that still counts as that precision.
REQUESTED_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "dynamic-int8": 8, "int4": 4}


@dataclass(frozen=True)
class FloatOp:
    """One op whose weights stayed wider than requested, and why (the backend's words)."""

    name: str
    op: str
    elements: int
    reason: str
    module: str | None = None  # the PyTorch module it came from, when the backend could map it

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "op": self.op, "elements": self.elements, "reason": self.reason}
        if self.module:
            out["module"] = self.module
        return out


@dataclass(frozen=True)
class Coverage:
    """What share of a candidate is in the requested precision (see the module docstring)."""

    precision: str
    by_precision: dict[str, int]  # weight elements per stored precision
    compute_ops: int | None = None
    fast_ops: int | None = None
    fast_path: str = ""
    float_ops: tuple[FloatOp, ...] = field(default_factory=tuple)

    @property
    def weights_total(self) -> int:
        return sum(self.by_precision.values())

    @property
    def weights_covered(self) -> int:
        limit = REQUESTED_BITS.get(self.precision, 32)
        is_int = self.precision in ("int8", "dynamic-int8", "int4")
        return sum(n for p, n in self.by_precision.items()
                   if BITS.get(p, 32) <= limit and (not is_int or not p.startswith(("fp", "bf"))))

    @property
    def weights_share(self) -> float:
        return self.weights_covered / self.weights_total if self.weights_total else 1.0

    @property
    def fast_share(self) -> float | None:
        if not self.compute_ops or self.fast_ops is None:
            return None
        return self.fast_ops / self.compute_ops

    @property
    def partial(self) -> bool:
        return self.weights_share < COVERAGE_FLOOR

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "precision": self.precision,
            "weights_share": round(self.weights_share, 6),
            "weights_by_precision": dict(sorted(self.by_precision.items())),
            "floor": COVERAGE_FLOOR,
            "partial": self.partial,
            "float_ops": [op.as_dict() for op in sorted(self.float_ops, key=lambda o: -o.elements)],
        }
        if self.fast_share is not None:
            out.update(fast_share=round(self.fast_share, 6), compute_ops=self.compute_ops, fast_ops=self.fast_ops)
        if self.fast_path:
            out["fast_path"] = self.fast_path
        return out


def summary(coverage: dict[str, Any]) -> str:
    """One line for tables: "97% int8" / "41% int8 (partial)"."""
    text = f"{coverage['weights_share'] * 100:.0f}%"
    if "fast_share" in coverage:
        text += f", {coverage['fast_share'] * 100:.0f}% fast ops"
    return text + (" (partial)" if coverage.get("partial") else "")
