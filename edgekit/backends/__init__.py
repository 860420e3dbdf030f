"""Backends: one folder per model format, registered here.

A backend package ``edgekit/backends/<format>/`` has up to three modules, each
imported only when needed so that ``import edgekit`` stays light:

- ``build.py``   ``build(job: ExportJob) -> list[Artifact]``: export from torch
  and quantize with the format's own tool. Returns one or more *candidates*
  (files inside ``job.workdir``) for the requested precision; the pipeline
  measures them and keeps the best. May import torch and converters.
- ``runtime.py`` ``open_session(path, threads=1) -> Session`` and
  ``runtime_version() -> str``. Imports only the format's runtime (never torch
  or a converter), so device-side commands run with the ``runtime`` extra.
- ``inspect.py`` ``inspect(path) -> dict``: I/O, op histogram, parameter count
  and the weight precision census (see ``InspectReport`` in edgekit.inspection).

Adding a format = one new folder plus one ``BackendInfo`` line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from edgekit.errors import ArtifactError, BackendUnavailableError
from edgekit.fidelity import FidelityTarget

if TYPE_CHECKING:
    import numpy as np

    from edgekit.artifact import Artifact
    from edgekit.config import ArtifactRequest, TargetProfile


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (``None`` for a dynamic dim), numpy dtype name."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class ExportJob:
    """Everything a backend's ``build`` needs for one (format, precision) request.

    ``model`` is a torch ``nn.Module`` in eval mode and ``example_inputs`` a
    tuple of torch tensors (batch 2, so exporters see a dynamic batch; batch
    ``fixed_batch`` when the model has one). ``calibration`` holds the
    calibration split by input name. ``workdir`` is a new, empty folder owned
    by this job; candidates are written inside it.

    ``reference`` holds the FP32 torch model's outputs on ``calibration`` (in
    ``output_names`` order) and ``fidelity`` the bar this request's candidates
    must clear against them (``edgekit.fidelity``): a backend that can trade
    size or speed for fidelity (keep layers float, raise int4 to int8)
    searches until its candidates clear it, and records what it kept.

    ``fixed_batch``: the model only runs at this batch size (a ``torch.export``
    program exported without a dynamic batch). Backends then export at exactly
    this batch, and everything that runs the artifact feeds it chunks of this
    many samples, padding the last one.
    """

    model: Any
    example_inputs: tuple[Any, ...]
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    request: ArtifactRequest
    profile: TargetProfile
    calibration: dict[str, np.ndarray]
    workdir: Path
    stem: str
    reference: tuple[np.ndarray, ...] = ()
    fidelity: FidelityTarget = field(default_factory=FidelityTarget)
    fixed_batch: int | None = None


class Session(Protocol):
    """A loaded artifact that runs numpy inputs in its native runtime.

    ``run`` takes float/int arrays as the *model's* interface describes them
    (integer-I/O models are quantized and dequantized by the session) and
    returns the outputs in ``outputs`` order, always as float or the model's
    declared non-quantized dtype. It takes any number of samples: a model
    with a fixed batch is fed chunks of that batch, the last one padded
    (``edgekit.batching``).
    """

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None:
        """Release the runtime (a child process, for runtimes isolated in one)."""


@dataclass(frozen=True)
class BackendInfo:
    """Static facts about a format, known without importing anything heavy."""

    format: str
    suffixes: tuple[str, ...]
    runtime: str
    extra: str
    is_directory: bool = False
    build_requires: tuple[str, ...] = field(default_factory=tuple)
    # What the backend builds; the budget-driven search tries these unless a [search] table narrows them.
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8", "dynamic-int8", "int4")


REGISTRY: dict[str, BackendInfo] = {
    "onnx": BackendInfo("onnx", (".onnx",), runtime="onnxruntime", extra="onnx"),
    "tflite": BackendInfo("tflite", (".tflite",), runtime="ai-edge-litert", extra="tflite"),
    "coreml": BackendInfo("coreml", (".mlpackage",), runtime="coreml-emulator", extra="coreml", is_directory=True,
                          precisions=("fp32", "fp16", "int8", "int4")),  # no dynamic activation quantization
}


def info(fmt: str) -> BackendInfo:
    """The registry entry for ``fmt``; unknown formats list the known ones."""
    try:
        return REGISTRY[fmt]
    except KeyError:
        raise ArtifactError(f"unknown format '{fmt}'", f"Known formats: {', '.join(sorted(REGISTRY))}") from None


def _load(fmt: str, part: str) -> ModuleType:
    """Import ``edgekit.backends.<fmt>.<part>``, turning missing pieces into clear errors."""
    name = f"edgekit.backends.{fmt}.{part}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == name or missing.startswith(f"edgekit.backends.{fmt}"):
            raise BackendUnavailableError(
                f"the {fmt} backend is not available yet in this edgekit version ({part} is missing)",
                "Build the other formats, or use a newer edgekit",
            ) from None
        raise missing_package(fmt, missing, part) from None


def missing_package(fmt: str, package: str, part: str = "build") -> BackendUnavailableError:
    """The error for a backend whose ``package`` is not installed (at import, or imported lazily later)."""
    extra = info(fmt).extra if part == "build" else "runtime"
    return BackendUnavailableError(
        f"the {fmt} backend needs the Python package '{package}', which is not installed",
        f'Install it with: pip install "edgekit[{extra}]"',
    )


def builder(fmt: str) -> ModuleType:
    """The backend's ``build`` module (heavy: torch and converters)."""
    return _load(fmt, "build")


def runtime(fmt: str) -> ModuleType:
    """The backend's ``runtime`` module (light: only the format's runtime)."""
    return _load(fmt, "runtime")


def inspector(fmt: str) -> ModuleType:
    """The backend's ``inspect`` module."""
    return _load(fmt, "inspect")


def detect_format(path: Path) -> str:
    """The format of an artifact file, from its suffix, checked against its bytes."""
    if not path.exists():
        raise ArtifactError(f"artifact not found: {path}", "Check the path")
    suffix = path.suffix.lower()
    for entry in REGISTRY.values():
        if suffix in entry.suffixes:
            if entry.is_directory != path.is_dir():
                kind = "a folder" if entry.is_directory else "a file"
                raise ArtifactError(f"{path} should be {kind} for the {entry.format} format", "Check the path")
            return entry.format
    known = ", ".join(s for e in REGISTRY.values() for s in e.suffixes)
    raise ArtifactError(f"{path.name} is not a model format edgekit knows", f"Give a file ending in one of: {known}")


def open_session(path: Path, threads: int = 1) -> Session:
    """Load an artifact in its native runtime (no torch)."""
    return runtime(detect_format(path)).open_session(path, threads=threads)
