"""How close emulated outputs must be to the host's, and the comparison itself.

Two measures, per output tensor, worst over tensors:

- ``max_rel_error``: the largest absolute difference divided by the largest
  magnitude of the host output (relative to the output's scale, so values
  near zero do not inflate it).
- ``max_lsb``: the largest absolute difference in quantization steps. The
  step is the output's own int8 scale when the model's outputs are
  quantized; otherwise one 255th of the host output's range (the step an
  int8 output of that range would have), so float-output quantized models
  are measured in the same unit.

Float artifacts (fp32, fp16) are judged on ``max_rel_error``; quantized ones
(int8, dynamic-int8, int4) on ``max_lsb``. The bounds come from measuring
every sample's artifacts on both emulated boards (docs/emulation.md has the
table): fp32 agreed to 5e-7; fp16 to 5e-5 on the A72 and 3e-3 on the A76,
whose fp16 arithmetic onnxruntime uses; static int8 exactly (0 LSB) for
integer outputs and within 1e-4 LSB for float ones; runtime-quantized kernels
(dynamic-int8, int4) within 1.5 LSB, as the ARM kernels quantize activations
their own way. Each bound leaves a margin over that; a different model lands
far outside, and so did onnxruntime's dynamic int8 MLP (12 LSB: on the AVX2
host it strayed ten times further from FP32 than on the emulated Pi).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FLOAT_PRECISIONS = ("fp32", "fp16")
QUANTIZED_PRECISIONS = ("int8", "dynamic-int8", "int4")
# Bounds (see the module docstring and docs/emulation.md for the measurements behind them).
MAX_REL_ERROR = {"fp32": 1e-4, "fp16": 1e-2}
MAX_LSB = {"int8": 1.0, "dynamic-int8": 3.0, "int4": 3.0}


def bound_for(precision: str) -> dict[str, float]:
    """The bound a ``precision`` artifact must meet: ``{"max_rel_error": x}`` or ``{"max_lsb": n}``."""
    if precision in MAX_REL_ERROR:
        return {"max_rel_error": MAX_REL_ERROR[precision]}
    if precision in MAX_LSB:
        return {"max_lsb": MAX_LSB[precision]}
    from edgekit.errors import InputError

    raise InputError(f"unknown precision '{precision}'",
                     f"Known precisions: {', '.join(FLOAT_PRECISIONS + QUANTIZED_PRECISIONS)}")


def _difference(emulated: np.ndarray, host: np.ndarray) -> float:
    """Largest absolute difference; NaN or inf where only one side has them counts as infinite."""
    e, h = np.asarray(emulated, dtype=np.float64), np.asarray(host, dtype=np.float64)
    same_special = (np.isnan(e) & np.isnan(h)) | (np.isinf(e) & (e == h))
    diff = np.where(same_special, 0.0, np.abs(e - h))
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(diff.max()) if diff.size else 0.0


def _step(host: np.ndarray, scale: float | None) -> float:
    if scale:
        return float(scale)
    finite = np.asarray(host, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    span = float(finite.max() - finite.min()) if finite.size else 0.0
    return span / 255 if span > 0 else max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-12) / 127


def compare_outputs(emulated: Sequence[np.ndarray], host: Sequence[np.ndarray], precision: str,
                    output_scales: Sequence[float | None] = ()) -> dict[str, Any]:
    """Compare emulated outputs with the host's (same order); the measures, the bound and pass/fail.

    ``output_scales`` are the outputs' int8 scales when the model's outputs
    are quantized (None per float output). Returns ``max_abs_error``,
    ``max_rel_error``, ``max_lsb``, ``lsb_basis``, ``bound``, ``status``
    (``pass``/``fail``) and ``message``.
    """
    bound = bound_for(precision)
    if len(emulated) != len(host):
        return _verdict(bound, None, f"the emulated run gave {len(emulated)} outputs, the host {len(host)}")
    abs_err = rel_err = lsb = 0.0
    bases = set()
    for index, (e, h) in enumerate(zip(emulated, host)):
        if np.shape(e) != np.shape(h):
            return _verdict(bound, None, f"output {index} has shape {np.shape(e)} emulated, {np.shape(h)} on the host")
        diff = _difference(e, h)
        scale = output_scales[index] if index < len(output_scales) else None
        magnitude = float(np.nanmax(np.abs(h))) if np.size(h) else 0.0
        abs_err = max(abs_err, diff)
        rel_err = max(rel_err, diff / magnitude if np.isfinite(magnitude) and magnitude > 0 else diff)
        # Rounded: differences of dequantized integers are whole steps up to float32 noise.
        lsb = max(lsb, round(diff / _step(h, scale), 6))
        bases.add("output scale" if scale else "output range / 255")
    measures = {"max_abs_error": abs_err, "max_rel_error": rel_err, "max_lsb": lsb,
                "lsb_basis": " and ".join(sorted(bases)) or None}
    return _verdict(bound, measures, "")


def failed(precision: str, problem: str) -> dict[str, Any]:
    """The record's comparison part when there is nothing to compare (the guest could not run the artifact)."""
    return _verdict(bound_for(precision), None, problem)


def _verdict(bound: dict[str, float], measures: dict[str, Any] | None, problem: str) -> dict[str, Any]:
    if measures is None:
        measures = {"max_abs_error": None, "max_rel_error": None, "max_lsb": None, "lsb_basis": None}
        return {**measures, "bound": bound, "status": "fail", "message": problem}
    (name, limit), = bound.items()
    value = measures[name]
    passed = value <= limit
    message = f"{name} {value:.3g} {'within' if passed else 'exceeds'} the bound {limit:g}"
    return {**measures, "bound": bound, "status": "pass" if passed else "fail", "message": message}
