"""How an Apple device runs a ``.mlpackage``: Core ML itself, via coremltools (macOS only).

``bench`` opens Core ML sessions here, not in ``runtime.py``: on this host the
build validates packages in edgekit's emulator, whose speed says nothing about
a device, while a benchmark must time the real runtime or refuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends import TensorSpec, bench_unavailable
from edgekit.errors import ArtifactError, BackendUnavailableError

# MLMultiArray data types (Core ML's ArrayFeatureType.ArrayDataType values).
_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}


def runtime_version() -> str | None:
    from edgekit.machine import package_versions

    version = package_versions(("coremltools",)).get("coremltools")
    return f"coremltools {version}" if version else None


class CoreMLDeviceSession:
    """A Core ML package run by coremltools with compute units ALL, behind the Session contract."""

    emulated = False

    def __init__(self, path: Path, threads: int = 1) -> None:
        reason = bench_unavailable("coreml")
        if reason:
            raise BackendUnavailableError(reason)
        try:
            import coremltools as ct
        except ModuleNotFoundError:
            raise BackendUnavailableError(
                "benchmarking Core ML needs the Python package 'coremltools', which is not installed",
                'Install it with: pip install "edgekit[coreml]"',
            ) from None
        try:
            self._model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
        except Exception as exc:  # coremltools raises untyped errors for bad packages
            raise ArtifactError(f"Core ML cannot load {path.name}: {exc}", "Check the .mlpackage is complete (rebuild it)") from None
        description = self._model.get_spec().description
        self.inputs = [_spec(f) for f in description.input]
        self.outputs = [_spec(f) for f in description.output]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._model.predict({s.name: feeds[s.name] for s in self.inputs})
        return [np.asarray(result[s.name]) for s in self.outputs]

    def close(self) -> None:
        self._model = None


def _spec(feature: Any) -> TensorSpec:
    if feature.type.WhichOneof("Type") != "multiArrayType":
        raise ArtifactError(f"Core ML input/output '{feature.name}' is not a multi-array",
                            "edgekit benches tensor models only; convert with tensor inputs")
    array = feature.type.multiArrayType
    return TensorSpec(feature.name, tuple(int(d) for d in array.shape), _DTYPES.get(array.dataType, "float32"))


def open_session(path: Path, threads: int = 1) -> CoreMLDeviceSession:
    return CoreMLDeviceSession(path, threads)
