"""Run ``.mlpackage`` artifacts: Apple's Core ML runtime on macOS, edgekit's emulator elsewhere.

Off macOS (or with ``EDGEKIT_COREML_EMULATOR=1``) sessions run the saved
package's own bytes in the numpy ML Program interpreter
(``emulator/``); they expose ``emulated = True`` because the numbers are a
semantic reference, not what Apple's kernels compute bit for bit.

Imports: numpy and protobuf, plus the Core ML protobuf definitions read from
the installed coremltools wheel *without importing coremltools* (see
``emulator/proto.py``), so no torch and no converter is loaded. On macOS the
native path imports coremltools (which itself imports torch when present).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends import TensorSpec
from edgekit.backends.coreml.emulator import Interpreter, load_package
from edgekit.backends.coreml.emulator.program import FeatureSpec, Package
from edgekit.backends.coreml.emulator.threads import blas_threads
from edgekit.errors import ArtifactError, DataError

EMULATOR_VERSION = "1"


def _use_native() -> bool:
    return sys.platform == "darwin" and os.environ.get("EDGEKIT_COREML_EMULATOR", "") not in ("1", "true")


def runtime_version() -> str:
    """``coreml-emulator <edgekit>`` off macOS; ``coremltools <v> (Core ML)`` on macOS."""
    if _use_native():
        import coremltools

        return f"coremltools {coremltools.__version__} (Core ML)"
    from edgekit import __version__

    return f"coreml-emulator {__version__}.{EMULATOR_VERSION}"


def tensor_spec(feature: FeatureSpec, package: Package | None = None) -> TensorSpec:
    """The feature as a TensorSpec; ``None`` marks a flexible dim.

    Output descriptions written by coremltools carry no shape, so outputs take
    the shape the program declares for them (symbolic dims become ``None``).
    """
    if not feature.shape and package is not None:
        declared = _declared(package).get(feature.name)
        if declared is not None and declared.shape is not None:
            return TensorSpec(feature.name, tuple(declared.shape), feature.dtype)
    shape: list[int | None] = list(feature.shape)
    for i, (low, high) in enumerate(feature.ranges):
        if low != high:
            shape[i] = None
    if feature.enumerated and len({s[0] for s in feature.enumerated}) > 1:
        shape[0] = None
    return TensorSpec(feature.name, tuple(shape), feature.dtype)


def _any_batch(spec: TensorSpec) -> TensorSpec:
    return TensorSpec(spec.name, (None, *spec.shape[1:]), spec.dtype) if spec.shape else spec


def _declared(package: Package) -> dict[str, Any]:
    function = package.main
    types = {name: ttype for op in function.operations for name, ttype in op.outputs}
    types.update(dict(function.inputs))
    return {name: types[name] for name in function.outputs if name in types}


def _batch_limit(package: Package) -> int | None:
    """Largest batch one call may take: None = unbounded; 1 = fixed batch (loop over samples)."""
    limits = []
    for feature in package.inputs:
        if feature.ranges:
            low, high = feature.ranges[0]
            limits.append(None if high < 0 else high)
        elif feature.enumerated:
            limits.append(max(s[0] for s in feature.enumerated))
        else:
            limits.append(feature.shape[0] if feature.shape else 1)
    bounded = [x for x in limits if x is not None]
    return min(bounded) if bounded else None


class CoreMLSession:
    """An ML Program behind edgekit's ``Session`` contract; any batch size.

    Batches larger than the model's batch bound are run in chunks (one sample
    at a time for a fixed-batch model) and concatenated.
    """

    emulated = True

    def __init__(self, path: Path, threads: int = 1) -> None:
        # ``threads`` bounds the BLAS threads of emulated runs (emulator/threads.py says why it matters).
        self.path = Path(path)
        self.threads = threads
        self.package = load_package(self.path)
        # The session takes any batch (it loops when the package's batch is fixed), so dim 0 is always None.
        self.inputs = [_any_batch(tensor_spec(f)) for f in self.package.inputs]
        self.outputs = [_any_batch(tensor_spec(f, self.package)) for f in self.package.outputs]
        self._limit = _batch_limit(self.package)
        self._native: Any = None
        self._interpreter: Interpreter | None = None
        if _use_native():  # Apple's runtime runs ops the emulator may not know
            import coremltools as ct

            self._native = ct.models.MLModel(str(self.path))
            self.emulated = False
        else:
            self._interpreter = Interpreter(self.package)

    def _prepare(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        prepared = {}
        batch = None
        for spec, feature in zip(self.inputs, self.package.inputs, strict=True):
            if spec.name not in feeds:
                raise DataError(
                    f"no data for model input '{spec.name}'", f"Give arrays named {', '.join(s.name for s in self.inputs)}"
                )
            value = np.asarray(feeds[spec.name])
            if value.dtype.kind not in "fiub":
                raise DataError(f"input '{spec.name}' has dtype {value.dtype}", f"Give {spec.dtype} data")
            if spec.dtype.startswith("int") and value.dtype.kind == "f":
                raise DataError(f"input '{spec.name}' takes {spec.dtype} data but got {value.dtype}", "Give integer data")
            if value.ndim != len(spec.shape) or any(d is not None and d != s for d, s in zip(spec.shape[1:], value.shape[1:])):
                shown = tuple("N" if d is None else d for d in spec.shape)
                raise DataError(f"input '{spec.name}' has shape {value.shape}, the model takes {shown}", "Fix the data's shape")
            for axis, (low, high) in enumerate(feature.ranges[1:], start=1):
                if value.shape[axis] < low or (high >= 0 and value.shape[axis] > high):
                    raise DataError(f"input '{spec.name}' dim {axis} = {value.shape[axis]} is outside {low}..{high}",
                                    "Fix the data's shape")
            if batch is not None and value.shape[0] != batch:
                raise DataError("inputs have different batch sizes", "Give every input the same number of samples")
            batch = value.shape[0]
            prepared[spec.name] = np.ascontiguousarray(value, dtype=spec.dtype)  # int64 ids become int32
        return prepared, int(batch or 0)

    def _run_chunk(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._native is not None:
            result = self._native.predict(feeds)
            return [np.asarray(result[o.name]) for o in self.outputs]
        result = self._interpreter.run(feeds)  # type: ignore[union-attr]  # set whenever _native is None
        return [result[o.name] for o in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        prepared, batch = self._prepare(feeds)
        if batch == 0:
            raise DataError("the inputs hold no samples", "Give at least one sample")
        step = batch if self._limit is None else min(batch, self._limit)
        with blas_threads(self.threads if self._native is None else None):
            chunks = [self._run_chunk({k: v[i : i + step] for k, v in prepared.items()}) for i in range(0, batch, step)]
        outputs = [np.concatenate([c[j] for c in chunks], axis=0) if len(chunks) > 1 else chunks[0][j]
                   for j in range(len(self.outputs))]
        # float16 outputs (a model converted without a final cast) are widened: sessions return float32.
        return [o.astype(np.float32) if o.dtype == np.float16 else o for o in outputs]

    def close(self) -> None:
        """Nothing to release beyond memory; present so every session can be closed alike."""

    def __enter__(self) -> CoreMLSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_session(path: Path, threads: int = 1) -> CoreMLSession:
    """Load ``path`` (.mlpackage) for running; bad packages raise ArtifactError, unknown ops UnsupportedModelError."""
    if not Path(path).is_dir():
        raise ArtifactError(f"{path} is not an .mlpackage folder", "Give the .mlpackage directory")
    return CoreMLSession(Path(path), threads=threads)
