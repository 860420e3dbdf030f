"""Run ``.mlpackage`` artifacts: Apple's Core ML runtime on macOS, edgekit's emulator elsewhere.

Off macOS (or with ``EDGEKIT_COREML_EMULATOR=1``) sessions run the saved
package's own bytes in the numpy ML Program interpreter
(``emulator/``); they expose ``emulated = True`` because the numbers are a
semantic reference, not what Apple's kernels compute bit for bit.

Sessions take any number of samples. A package converted at a fixed batch
(a fixed-batch ``.pt2``, or a model whose batch would not stay flexible) is
fed chunks of exactly that batch, the last one padded (``edgekit.batching``);
a flexible package is fed ``EMULATOR_CHUNK`` samples per emulator call, which
bounds memory (a 256-sample MobileNetV2 batch held 11 GB) and keeps arrays
nearer the caches.

Imports: numpy and protobuf, plus the Core ML protobuf definitions read from
the installed coremltools wheel *without importing coremltools* (see
``emulator/proto.py``), so no torch and no converter is loaded. On macOS the
native path imports coremltools (which itself imports torch when present).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.backends import TensorSpec
from edgekit.batching import run_in_chunks
from edgekit.backends.coreml.emulator import Interpreter, load_package
from edgekit.backends.coreml.emulator.program import FeatureSpec, Package
from edgekit.backends.coreml.emulator.threads import blas_threads
from edgekit.errors import ArtifactError, DataError

EMULATOR_VERSION = "2"
EMULATOR_CHUNK = 8  # samples per emulator call for flexible-batch packages (8 ran 1.2-1.4x faster than 16 at 224x224)


def uses_core_ml() -> bool:
    """Whether sessions here run Apple's Core ML (macOS, unless EDGEKIT_COREML_EMULATOR=1) rather than the emulator."""
    return sys.platform == "darwin" and os.environ.get("EDGEKIT_COREML_EMULATOR", "") not in ("1", "true")


def runtime_version() -> str:
    """``coreml-emulator <edgekit>`` off macOS; ``coremltools <v> (Core ML)`` on macOS."""
    if uses_core_ml():
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


def fixed_batch(package: Package) -> int | None:
    """The batch every input is fixed to (no shape range, no enumerated shapes), or None when it is flexible."""
    firsts = set()
    for feature in package.inputs:
        if feature.ranges or feature.enumerated or not feature.shape:
            return None
        firsts.add(feature.shape[0])
    return firsts.pop() if len(firsts) == 1 else None


def run_samples(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], feeds: dict[str, np.ndarray],
                fixed: int | None, limit: int | None = EMULATOR_CHUNK) -> list[np.ndarray]:
    """Run any number of samples through ``run``: padded chunks of ``fixed``, else chunks of at most ``limit``."""
    if fixed is not None:
        return run_in_chunks(run, feeds, fixed)
    total = len(next(iter(feeds.values())))
    step = total if limit is None else max(1, min(total, limit))
    chunks = [run({k: v[i : i + step] for k, v in feeds.items()}) for i in range(0, total, step)]
    return [np.concatenate([c[j] for c in chunks], axis=0) if len(chunks) > 1 else chunks[0][j]
            for j in range(len(chunks[0]))]


def _batch_limit(package: Package) -> int | None:
    """Largest batch one call may take: None = unbounded."""
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

    A fixed-batch package gets padded chunks of its batch; a flexible one
    chunks within its batch bound (``EMULATOR_CHUNK`` samples when emulated).
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
        self._fixed = fixed_batch(self.package)
        self._native: Any = None
        self._interpreter: Interpreter | None = None
        if uses_core_ml():  # Apple's runtime runs ops the emulator may not know
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
        limit = self._limit if self._native is not None else min(self._limit or EMULATOR_CHUNK, EMULATOR_CHUNK)
        with blas_threads(self.threads if self._native is None else None):
            outputs = run_samples(self._run_chunk, prepared, self._fixed, limit)
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
