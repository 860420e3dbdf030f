"""Backends: one folder per model format, registered here.

A backend package ``edgekit/backends/<format>/`` has up to three modules, each
imported only when needed so that ``import edgekit`` stays light:

- ``build.py``   ``build(job: ExportJob) -> list[Artifact]``: export from torch
  and quantize with the format's own tool. Returns one or more *candidates*
  (files inside ``job.workdir``) for the requested precision; the pipeline
  measures them and keeps the best. The facts the pipeline reads go into
  ``Artifact.details`` under the keys of ``edgekit.artifact.CandidateFacts``
  (census, coverage, float agreement, FP32 timing, minimum runtime); any
  other key is the backend's own and only reported. May import torch and
  converters.
- ``runtime.py`` ``open_session(path, threads=1) -> Session`` and
  ``runtime_version() -> str``. Imports only the format's runtime (never torch
  or a converter), so device-side commands run with the ``runtime`` extra.
- ``inspect.py`` ``inspect(path) -> dict``: I/O, op histogram, parameter count
  and the weight precision census (see ``InspectReport`` in edgekit.inspection).
- ``options.py`` (optional) ``Options``: a strict pydantic model of the
  ``options`` table a profile may give this format's artifacts, validated
  when the profile loads. Without it the format takes no options. It may
  define ``problem(precision) -> str | None`` for combinations it refuses.
- the module named by ``BackendInfo.bench_module`` (``runtime`` unless the
  device runs the format differently from the host: Core ML is emulated
  here but run by Apple's runtime on the device): ``open_session``,
  ``runtime_version``.

Adding a format = one new folder plus one ``BackendInfo`` line below: nothing
outside ``backends/`` names a format.
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from edgekit.errors import ArtifactError, BackendUnavailableError, ConfigError
from edgekit.fidelity import FidelityTarget
from edgekit.strict import StrictModel

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
    """Everything format-specific the rest of edgekit needs, known without importing anything heavy.

    ``runtime`` is the distribution that runs the format here (``runtimes``
    lists others that can, e.g. tflite-runtime); ``min_runtime`` the oldest
    runtime that runs what the backend writes, recorded in manifests unless a
    candidate states its own; ``tool_packages`` the converters whose versions
    a manifest records; ``delegate`` what ``bench`` reports as the accelerator
    when the session does not say. ``emulated``: the host validates the format
    in an emulator, so host latency and memory say nothing about the device.
    ``native_modules``: runtime modules a session loads in a child process
    (bench subtracts a bare child's memory). ``marker``: its matplotlib marker.
    ``runtime_extra``: the pip extra that installs the runtime on a device.
    ``bench_only_on``: the OS (``platform.system()``) the device runtime runs
    on, when it runs on one only; ``bench_elsewhere`` says what to do instead.
    ``renumbered_runtimes``: runtimes (of ``runtime`` and ``runtimes``) that
    number their releases apart from the scheme ``min_runtime_version`` uses,
    each with the highest minimum every release of theirs is known to meet
    (``install`` cannot tell above it and says so). ``firmware_module``: the
    backend module whose ``write_for_build(artifact, folder, micro, target)``
    writes the firmware library shipped beside an artifact for a
    microcontroller target (None: the format ships alone).
    """

    format: str
    label: str
    suffixes: tuple[str, ...]
    runtime: str
    extra: str
    min_runtime: str
    delegate: str
    tool_packages: tuple[str, ...] = ()
    runtimes: tuple[str, ...] = ()
    is_directory: bool = False
    emulated: bool = False
    bench_module: str = "runtime"
    native_modules: tuple[str, ...] = ()
    marker: str = "D"
    runtime_extra: str = "runtime"
    bench_only_on: str | None = None
    bench_elsewhere: str = ""
    renumbered_runtimes: tuple[tuple[str, str], ...] = ()
    firmware_module: str | None = None
    # What the backend builds; the budget-driven search tries these unless a [search] table narrows them.
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8", "dynamic-int8", "int4")


REGISTRY: dict[str, BackendInfo] = {
    # ONNX candidates record the oldest runtime their opset and IR version need (onnx/versions.py); the fallback.
    "onnx": BackendInfo("onnx", "ONNX", (".onnx",), runtime="onnxruntime", extra="onnx", min_runtime="1.18.0",
                        delegate="CPUExecutionProvider", tool_packages=("torch", "onnx", "onnxscript", "onnxruntime"),
                        marker="o"),
    # TFLite candidates record the converter's own min_runtime_version from the flatbuffer; this is the fallback.
    "tflite": BackendInfo("tflite", "TFLite", (".tflite",), runtime="ai-edge-litert", extra="tflite",
                          min_runtime="2.14.0", delegate="XNNPACK (LiteRT default delegate)",
                          tool_packages=("torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert"),
                          runtimes=("tflite-runtime", "tensorflow"),
                          native_modules=("ai_edge_litert.interpreter", "tflite_runtime.interpreter"), marker="s",
                          # The flatbuffer's min_runtime_version counts in TensorFlow Lite releases; LiteRT's
                          # numbering restarted at 1.0 after TF 2.17 (ai-edge-litert 1.2 ships with TF 2.19).
                          renumbered_runtimes=(("ai-edge-litert", "2.17.0"),),
                          firmware_module="clib"),  # the TFLite Micro C/C++ library
    "coreml": BackendInfo("coreml", "Core ML", (".mlpackage",), runtime="coreml-emulator", extra="coreml",
                          min_runtime="iOS 17", delegate="Core ML (compute units ALL)",
                          tool_packages=("torch", "coremltools"), runtimes=("coremltools",), is_directory=True,
                          emulated=True, bench_module="device", marker="^", bench_only_on="Darwin",
                          bench_elsewhere=("Core ML runs only on Apple devices (coremltools can predict only on macOS); "
                                           "bench the .mlpackage on a Mac, or use `edgekit build` estimates for "
                                           "iPhone targets"),
                          precisions=("fp32", "fp16", "int8", "int4")),  # no dynamic activation quantization
    "executorch": BackendInfo("executorch", "ExecuTorch", (".pte",), runtime="executorch", extra="executorch",
                              min_runtime="1.5.1", delegate="XNNPACK (ExecuTorch delegate)",
                              tool_packages=("torch", "torchao", "executorch"), marker="P", runtime_extra="executorch",
                              precisions=("fp32", "fp16", "int8", "dynamic-int8", "int4")),
}


def formats() -> tuple[str, ...]:
    """Every registered format name, in registry order."""
    return tuple(REGISTRY)


def tool_packages() -> tuple[str, ...]:
    """Distributions whose versions a manifest records when installed: every backend's tools, then numpy."""
    names = [name for entry in REGISTRY.values() for name in entry.tool_packages]
    return tuple(dict.fromkeys([*names, "numpy"]))


def tool_versions() -> dict[str, str]:
    """Installed versions of every backend's tools (missing ones left out), from package metadata."""
    import importlib.metadata

    versions = {}
    for name in tool_packages():
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def runtime_distributions() -> tuple[str, ...]:
    """Distributions that can run some format (bench records the installed ones), numpy first."""
    names = [name for entry in REGISTRY.values() for name in (entry.runtime, *entry.runtimes)]
    return tuple(dict.fromkeys(["numpy", *names]))


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
    extra = info(fmt).extra if part == "build" else info(fmt).runtime_extra
    return BackendUnavailableError(
        f"the {fmt} backend needs the Python package '{package}', which is not installed",
        f'Install it with: pip install "edgekit[{extra}]"',
    )


def builder(fmt: str) -> ModuleType:
    """The backend's ``build`` module (heavy: torch and converters)."""
    return _load(fmt, "build")


def build(job: ExportJob) -> list[Artifact]:
    """The candidates the request's backend builds for ``job``, with one compute thread (``threads``), so the
    same job gives the same bytes on every executor."""
    from edgekit.backends.threads import one_compute_thread

    with one_compute_thread():
        return list(builder(job.request.format).build(job))


def runtime(fmt: str) -> ModuleType:
    """The backend's ``runtime`` module (light: only the format's runtime)."""
    return _load(fmt, "runtime")


def inspector(fmt: str) -> ModuleType:
    """The backend's ``inspect`` module."""
    return _load(fmt, "inspect")


def bencher(fmt: str) -> ModuleType:
    """The module ``bench`` opens sessions with: how the *device* runs the format (see ``bench_module``)."""
    return _load(fmt, info(fmt).bench_module)


def firmware(fmt: str) -> ModuleType | None:
    """The module that writes ``fmt``'s microcontroller firmware library, or None when the format has none."""
    part = info(fmt).firmware_module
    return _load(fmt, part) if part else None


def bench_unavailable(fmt: str) -> str | None:
    """Why this machine cannot bench ``fmt`` (e.g. Core ML off Apple devices), or None when it can.

    Decided from the registry alone: nothing is imported, so the CLI process stays free of runtimes.
    """
    entry = info(fmt)
    if entry.bench_only_on is not None and platform.system() != entry.bench_only_on:
        return entry.bench_elsewhere or f"{entry.label} runs only on {entry.bench_only_on}"
    return None


def options_model(fmt: str) -> type[StrictModel]:
    """The strict model of ``fmt``'s artifact ``options`` (an empty one when the format takes none)."""
    try:
        module = importlib.import_module(f"edgekit.backends.{info(fmt).format}.options")
    except ModuleNotFoundError as exc:
        if exc.name != f"edgekit.backends.{fmt}.options":
            raise
        return NoOptions
    return module.Options


class NoOptions(StrictModel):
    """The options of a format that takes none: every key is unknown."""


def parse_options(fmt: str, raw: dict[str, Any], precision: str, where: str) -> StrictModel:
    """``raw`` as ``fmt``'s typed options; a ConfigError names the key, the value and what is accepted."""
    model = options_model(fmt)
    label = info(fmt).label
    known = "; ".join(f"{name} ({f.description or f.annotation})" for name, f in model.model_fields.items())
    unknown = sorted(set(raw) - set(model.model_fields))
    if unknown:
        raise ConfigError(f"{where}: unknown {label} option(s) {', '.join(unknown)}",
                          f"Known options: {known}" if known else f"{label} artifacts take no options; remove the table")
    try:
        options = model.model_validate(raw)
    except ValidationError as exc:
        key = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else "?"
        field_info = model.model_fields.get(key)
        expected = field_info.description if field_info is not None else exc.errors()[0]["msg"]
        raise ConfigError(f"{where}: option {key} = {raw.get(key)!r} is invalid", f"Expected {expected}") from None
    check = getattr(options, "problem", None)
    problem = check(precision) if callable(check) else None
    if problem:
        raise ConfigError(f"{where}: {problem}", "Remove the option, or change the artifact's precision")
    return options


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
