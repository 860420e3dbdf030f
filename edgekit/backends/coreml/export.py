"""torch → Core ML ML Program (``.mlpackage``) with coremltools.

Path: ``torch.export`` (dynamic batch ``Dim``) + ``run_decompositions({})``
first, because it is what converts Transformers (``jit.trace`` of
``nn.TransformerEncoder`` fails its sanity check); ``torch.jit.trace`` is the
fallback for models torch.export cannot capture. Each path is tried with a
flexible batch (``ct.RangeDim``) first and a fixed batch of 1 after that; the
result records which path and which batch mode won, and the session loops
over samples when the batch is fixed.

Imports torch and coremltools: build-time only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends import ExportJob
from edgekit.errors import ConfigError, UnsupportedModelError

MAX_BATCH = 1024  # upper bound of the flexible batch; larger batches are run in chunks by the session
SUPPORTED_IOS = ("17", "18")


@dataclass(frozen=True)
class Exported:
    """A converted model (in memory) and how it was made."""

    model: Any  # ct.models.MLModel
    export_path: str  # "torch.export" | "jit.trace"
    flexible_batch: bool
    min_ios: str
    compute_precision: str  # "fp32" | "fp16"
    notes: list[str] = field(default_factory=list)
    fp32_ops: tuple[str, ...] = ()  # op types kept in FP32 inside an FP16 program


def min_ios(job: ExportJob) -> str:
    """The profile's minimum iOS as "17"/"18"; profiles without one get iOS 17 (the oldest edgekit targets)."""
    value = job.profile.device.min_ios or "17"
    major = str(value).split(".")[0]
    if major not in SUPPORTED_IOS:
        raise ConfigError(
            f"target {job.profile.name} sets device.min_ios = {value!r}; the Core ML backend targets iOS "
            f"{' or '.join(SUPPORTED_IOS)}",
            "Set min_ios to \"17\" or \"18\"",
        )
    return major


def deployment_target(major: str) -> Any:
    import coremltools as ct

    return {"17": ct.target.iOS17, "18": ct.target.iOS18}[major]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """coremltools prints progress bars and version warnings to stderr/stdout; keep the CLI clean."""
    loggers = [logging.getLogger(n) for n in ("coremltools", "torch._export", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _ct_inputs(job: ExportJob, flexible: bool) -> list[Any]:
    import coremltools as ct

    specs = []
    for spec, example in zip(job.inputs, job.example_inputs, strict=True):
        rest = tuple(int(d) for d in example.shape[1:])
        batch = ct.RangeDim(lower_bound=1, upper_bound=MAX_BATCH, default=1) if flexible else 1
        # Core ML has no int64 tensors: integer inputs are int32 (the session casts int64 data).
        dtype = np.int32 if np.dtype(spec.dtype).kind in "iu" else np.float32
        specs.append(ct.TensorType(name=spec.name, shape=ct.Shape((batch, *rest)), dtype=dtype))
    return specs


def _ct_outputs(job: ExportJob) -> list[Any]:
    import coremltools as ct

    # float32 outputs even for FP16 compute: the interface stays float32 (a final cast is added).
    return [ct.TensorType(name=name, dtype=np.float32) for name in job.output_names]


def _examples(job: ExportJob, batch: int | None) -> tuple[Any, ...]:
    # A contiguous memory format: channels-last or sliced examples trip the converter.
    return tuple((t if batch is None else t[:batch]).contiguous() for t in job.example_inputs)


def _capture_export(job: ExportJob, flexible: bool) -> Any:
    import torch

    examples = _examples(job, None if flexible else 1)
    dynamic = None
    if flexible:
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        dynamic = tuple({0: batch} for _ in examples)
    program = torch.export.export(job.model, examples, dynamic_shapes=dynamic)
    return program.run_decompositions({})


def _capture_trace(job: ExportJob, flexible: bool) -> Any:
    import torch

    with torch.no_grad():
        return torch.jit.trace(job.model, _examples(job, None if flexible else 1), check_trace=False)


def convert(job: ExportJob, compute_precision: str, fp32_ops: tuple[str, ...] = ()) -> Exported:
    """Convert ``job.model`` for the profile's iOS at ``compute_precision`` ("fp32" | "fp16").

    ``fp32_ops`` names MIL op types that stay FP32 in an FP16 program (mixed
    precision). Raises UnsupportedModelError (with each attempt's first error
    line) when no path converts.
    """
    import coremltools as ct

    major = min_ios(job)
    job.model.eval()
    if compute_precision == "fp32":
        precision = ct.precision.FLOAT32
    elif fp32_ops:
        precision = ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type not in fp32_ops)
    else:
        precision = ct.precision.FLOAT16
    failures: list[str] = []
    attempts = [("torch.export", _capture_export), ("jit.trace", _capture_trace)]
    for path_name, capture in attempts:
        for flexible in (True, False):
            label = f"{path_name} ({'flexible' if flexible else 'fixed'} batch)"
            try:
                with quiet():
                    source = capture(job, flexible)
                    model = ct.convert(
                        source,
                        convert_to="mlprogram",
                        minimum_deployment_target=deployment_target(major),
                        compute_precision=precision,
                        inputs=_ct_inputs(job, flexible),
                        outputs=_ct_outputs(job),
                        skip_model_load=True,  # loading needs the macOS runtime; validation uses the saved bytes
                    )
            except Exception as exc:  # converters raise anything; keep the first line for the report
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                failures.append(f"{label}: {type(exc).__name__}: {first}")
                continue
            notes = list(failures)
            if not flexible:
                notes.append("flexible batch did not convert; the model takes batch 1 and the session loops over samples")
            return Exported(model, path_name, flexible, major, compute_precision, notes, tuple(fp32_ops))
    raise UnsupportedModelError(
        f"coremltools could not convert the model for target {job.profile.name}: {'; '.join(failures)}",
        "Rewrite the failing layer with plain tensor ops (see DESIGN.md conversion pitfalls) or drop Core ML for this target",
    )


def save(model: Any, path: Path) -> Path:
    """Save an MLModel as ``path`` (.mlpackage folder), atomically."""
    from edgekit.artifact import atomic_path

    with atomic_path(path) as tmp, quiet():
        model.save(str(tmp))
    return path
