"""The model's input contract, as the release manifest records it, and the check every request passes.

A wrong input to an edge model rarely fails loudly: a float array fed as
integers is truncated, a transposed image runs and answers nonsense, and a
quantized artifact clips values far outside the range it was calibrated for.
``Interface.check`` refuses all of these with an ``InputError`` that names the
input, the problem and the fix, before the runtime sees them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import InputError

# How far outside the calibrated [min, max] a value may lie, as a share of that span.
DEFAULT_RANGE_TOLERANCE = 0.25


@dataclass(frozen=True)
class InputSpec:
    """One input: name, shape (``None`` or a name for a dynamic dim), dtype, and the calibrated [min, max]."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype[Any]
    value_range: tuple[float, float] | None

    def allowed(self, tolerance: float) -> tuple[float, float] | None:
        """The widest values accepted: the calibrated range widened by ``tolerance`` of its span."""
        if self.value_range is None:
            return None
        low, high = self.value_range
        slack = tolerance * ((high - low) or max(abs(high), 1.0))
        return low - slack, high + slack

    def describe(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {self.dtype.name}"


@dataclass(frozen=True)
class Interface:
    """Every input of a release's model, in the order the manifest lists them, and its output names."""

    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Interface:
        """The interface ``manifest["model"]`` records; InputError when it records none (an older build)."""
        model = manifest.get("model", {})
        raw = model.get("inputs")
        if not raw:
            raise InputError(f"the release of {model.get('name', 'this model')} records no model inputs",
                             "Rebuild and re-release it with this edgekit version")
        specs = []
        for entry in raw:
            value_range = entry.get("range")
            specs.append(InputSpec(entry["name"], tuple(entry["shape"]), np.dtype(entry["dtype"]),
                                   (float(value_range[0]), float(value_range[1])) if value_range else None))
        return cls(tuple(specs), tuple(model.get("outputs", [])))

    def describe(self) -> str:
        return "; ".join(spec.describe() for spec in self.inputs)

    def check(self, inputs: Any, tolerance: float | None = DEFAULT_RANGE_TOLERANCE) -> dict[str, np.ndarray]:
        """``inputs`` as the model's arrays, or InputError: names, dtypes, shapes, finite values, ranges.

        ``inputs`` is a mapping of name to array-like (nested lists work), or a
        bare array when the model has one input. Same-kind dtypes are cast
        (float64 to float32, as JSON gives them; integers into floats), never
        floats into integers. Every input needs its leading batch axis.
        ``tolerance`` widens the calibrated ranges (``None`` skips that check).
        """
        named = self._named(inputs)
        feeds = {spec.name: self._array(spec, named[spec.name]) for spec in self.inputs}
        rows = {len(array) for array in feeds.values()}
        if len(rows) > 1:
            counts = ", ".join(f"{name}: {len(array)}" for name, array in feeds.items())
            raise InputError(f"inputs disagree on the number of samples ({counts})", "Send the same rows in every input")
        for spec in self.inputs:
            _check_values(spec, feeds[spec.name], tolerance)
        return feeds

    def _named(self, inputs: Any) -> Mapping[str, Any]:
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise InputError(f"the model takes {len(self.inputs)} inputs ({self.describe()})",
                                 "Pass a mapping of input name to array")
            return {self.inputs[0].name: inputs}
        expected = {spec.name for spec in self.inputs}
        missing, unknown = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
        if missing or unknown:
            what = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                               f"unknown {', '.join(map(str, unknown))}" if unknown else "") if part)
            raise InputError(f"inputs do not match the model ({what})", f"The model takes: {self.describe()}")
        return inputs

    @staticmethod
    def _array(spec: InputSpec, value: Any) -> np.ndarray:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"input {spec.name} is not an array ({exc})", f"Send {spec.describe()}") from None
        if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise InputError(f"input {spec.name} is not numeric (got {array.dtype})", f"Send {spec.describe()}")
        if np.issubdtype(spec.dtype, np.integer) and not np.issubdtype(array.dtype, np.integer):
            raise InputError(f"input {spec.name} is {array.dtype} but the model takes {spec.dtype.name}",
                             "Send integers: a float would be truncated silently")
        if array.ndim != len(spec.shape):
            raise InputError(f"input {spec.name} has {array.ndim} dimension(s) {list(array.shape)}, the model takes "
                             f"{len(spec.shape)}", f"Send {spec.describe()}, with a leading batch axis")
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if got < 1 or (axis > 0 and isinstance(want, int) and want != got):
                raise InputError(f"input {spec.name} has shape {list(array.shape)}, the model takes "
                                 f"{spec.describe()} (dimension {axis} differs)", "Reshape the input to match")
        if np.issubdtype(spec.dtype, np.integer):
            info = np.iinfo(spec.dtype)
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise InputError(f"input {spec.name} holds values outside {spec.dtype.name}",
                                 "Send values the model's integer type can hold")
        return np.ascontiguousarray(array.astype(spec.dtype, copy=False))


def _check_values(spec: InputSpec, array: np.ndarray, tolerance: float | None) -> None:
    """InputError naming the first non-finite value, or the first value outside the allowed range."""
    if np.issubdtype(array.dtype, np.floating):
        bad = np.argwhere(~np.isfinite(array))
        if len(bad):
            index = tuple(int(i) for i in bad[0])
            raise InputError(f"input {spec.name} holds {array[index]} at index {list(index)}",
                             "Send finite numbers: the model's answer to NaN or Inf means nothing")
    allowed = spec.allowed(tolerance) if tolerance is not None else None
    if allowed is None or not array.size:
        return
    low, high = allowed
    outside = np.argwhere((array < low) | (array > high))
    if len(outside):
        index = tuple(int(i) for i in outside[0])
        seen_low, seen_high = spec.value_range  # type: ignore[misc] # allowed is None without it
        raise InputError(
            f"input {spec.name} holds {_number(array[index])} at index {list(index)}, outside the range the model "
            f"was calibrated for ([{_number(seen_low)}, {_number(seen_high)}]; accepted up to "
            f"[{_number(low)}, {_number(high)}])",
            "Check the input's scaling (e.g. pixels 0..255 versus 0..1); its answer there would be a guess")


def _number(value: Any) -> str:
    number = float(value)
    return str(int(number)) if math.isfinite(number) and number.is_integer() else f"{number:.6g}"
