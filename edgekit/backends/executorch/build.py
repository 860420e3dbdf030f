"""torch -> ``.pte`` candidates for one request, with their weight census, coverage and FP32 timing.

Recipes per precision (data, as in the TFLite backend):

- fp32: ``xnnpack-fp32``, the exported program lowered as is;
- fp16: ``xnnpack-fp16``, a half-precision copy behind float32 I/O casts, so
  the XNNPACK delegate runs FP16 kernels where the CPU has them;
- int8: ``pt2e-static`` (XNNPACK quantizer, calibrated per-channel weights and
  per-tensor activations) and ``pt2e-dynamic`` (activation scales per run);
- dynamic-int8: ``pt2e-dynamic``;
- int4: ``torchao-8da4w``, torchao's int4 weights in groups of 32 with int8
  activations quantized per run (linear layers; the rest stays float).

Every candidate must earn its label: a "quantized" candidate with no int8
weight is dropped (the quantizer found nothing it handles), and the FP32
program carries ``float_agreement`` so validation holds it to the FP32
model. Quantized candidates are timed against the FP32 program in one
interleaved run (``details["vs_fp32"]``). ExecuTorch has no layer-by-layer
fallback here yet: a candidate that misses the fidelity bar is measured and
reported like any other and fails its budgets.

Imports torch and executorch: build-time only.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from edgekit.artifact import Artifact, atomic_write_bytes
from edgekit.backends import ExportJob, parse_options
from edgekit.backends.candidates import finished, none_made, nothing_stored_in, time_against_fp32
from edgekit.backends.executorch import export
from edgekit.coverage import REQUESTED_BITS, Coverage, FloatOp
from edgekit.errors import EdgekitError, InternalError, UnsupportedModelError


@dataclass
class _Context:
    """What every recipe of one job shares: the options, the FP32 program, notes."""

    job: ExportJob
    max_batch: int
    fp32: torch.export.ExportedProgram
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Recipe:
    """A named way to make one candidate: ``make`` returns the program to lower."""

    variant: str
    make: Callable[[_Context], torch.export.ExportedProgram]
    description: str
    quantized: bool = False
    float_agreement: str | None = None  # "fp32" / "fp16": a float program held to the FP32 model


def _fp32(ctx: _Context) -> torch.export.ExportedProgram:
    return ctx.fp32


def _fp16(ctx: _Context) -> torch.export.ExportedProgram:
    import copy

    return export.export(ctx.job, export.HalfPrecision(copy.deepcopy(ctx.job.model)).eval(), ctx.max_batch)


def _pt2e(dynamic: bool) -> Callable[[_Context], torch.export.ExportedProgram]:
    def make(ctx: _Context) -> torch.export.ExportedProgram:
        program, kept = export.quantize(ctx.job, ctx.fp32, dynamic, ctx.max_batch)
        if kept:
            ctx.notes.append(f"pt2e-static: kept float (calibrated range > {export.RANGE_LIMIT:g}): {', '.join(kept)}")
        return program

    return make


_STATIC = "PT2E + XNNPACKQuantizer: symmetric per-channel int8 weights, int8 activations calibrated on the data"
_DYNAMIC = "PT2E + XNNPACKQuantizer (dynamic): symmetric per-channel int8 weights, activation scales computed per run"
RECIPES: dict[str, list[Recipe]] = {
    "fp32": [Recipe("xnnpack-fp32", _fp32, "torch.export, XNNPACK partitioner", float_agreement="fp32")],
    # No float_agreement for FP16: XNNPACK's FP16 kernels differ from torch by more than the Core ML-calibrated 1e-2
    # (1.2e-2 scaled on the transformer sample, 2.2e-2 on MobileNet, at cosine 1.0000): the FP16 quality bar judges.
    "fp16": [Recipe("xnnpack-fp16", _fp16, "FP16 copy of the model behind float32 casts, XNNPACK partitioner")],
    "int8": [Recipe("pt2e-static", _pt2e(dynamic=False), _STATIC, quantized=True),
             Recipe("pt2e-dynamic", _pt2e(dynamic=True), _DYNAMIC, quantized=True)],
    "dynamic-int8": [Recipe("pt2e-dynamic", _pt2e(dynamic=True), _DYNAMIC, quantized=True)],
    "int4": [Recipe("torchao-8da4w", lambda ctx: export.int4(ctx.job, ctx.max_batch),
                    f"torchao Int8DynamicActivationIntxWeightConfig: int4 weights in groups of {export.INT4_GROUP} "
                    "(linear layers), int8 activations quantized per run", quantized=True)],
}


def _exporter_version() -> str:
    """The ExecuTorch that wrote the program: the oldest runtime its compatibility policy lets load it."""
    return importlib.metadata.version("executorch")


def _coverage(job: ExportJob, program: torch.export.ExportedProgram, census: dict[str, int],
              lowered: export.Lowered) -> Coverage:
    floats: list[FloatOp] = []
    if job.request.precision != "fp32":
        limit = REQUESTED_BITS[job.request.precision]
        for op, module, elements, why in export.float_weight_ops(program, limit, export.stored_blobs(lowered.data)):
            if module and job.request.precision == "fp16":
                module = module.removeprefix("model.")  # the HalfPrecision wrapper's attribute
            floats.append(FloatOp(module or op, op, elements, why, module))
    for op, module in lowered.left_out:
        floats.append(FloatOp(module or op, op, 0, "not delegated to XNNPACK: runs in a portable kernel", module))
    return Coverage(job.request.precision, census, lowered.compute_ops, lowered.delegated_ops,
                    "compute ops delegated to XNNPACK", tuple(floats))


def _candidate(ctx: _Context, recipe: Recipe) -> Artifact | None:
    """Make, lower and write one recipe's ``.pte``; None (with a note) when it fails or quantizes nothing."""
    job = ctx.job
    started = time.perf_counter()
    try:
        program = recipe.make(ctx)
        lowered = export.lower(job, program)
    except EdgekitError as exc:
        ctx.notes.append(f"{recipe.variant}: failed ({exc.problem[:200]})")
        return None
    census = lowered.census
    empty = nothing_stored_in(job.request.precision, census) if recipe.quantized else None
    if empty:
        ctx.notes.append(f"{recipe.variant}: dropped, {empty}")
        return None
    path = job.workdir / f"{job.stem}.{job.request.precision}.{recipe.variant}.pte"
    atomic_write_bytes(path, lowered.data)
    coverage = _coverage(job, program, census, lowered)
    details: dict[str, Any] = {
        "weights": {"by_precision": dict(sorted(census.items())), "parameters": sum(census.values())},
        "coverage": coverage.as_dict(),
        "delegation": {"compute_ops": lowered.compute_ops, "delegated_compute_ops": lowered.delegated_ops,
                       "delegate_calls": lowered.delegate_calls, "delegate": "XnnpackBackend"},
        "min_runtime_version": _exporter_version(),
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    if recipe.float_agreement:
        details["float_agreement"] = recipe.float_agreement
    config = {"tool": recipe.description, "executorch": _exporter_version(), "max_batch": ctx.max_batch,
              "fixed_batch": job.fixed_batch}
    return Artifact(path, "executorch", job.request.precision, recipe.variant,
                    parent=f"{job.stem}.fp32.pte", config=config, details=details)


def _time_against_fp32(ctx: _Context, candidates: list[Artifact]) -> list[dict[str, Any]]:
    """Each candidate's ``vs_fp32`` record: an FP32 program and every candidate timed in one interleaved run."""
    from edgekit.backends.executorch import fp32_timing

    job = ctx.job
    reference = job.workdir / f"{job.stem}.fp32-reference.pte"
    batch = job.fixed_batch or 1
    feeds = {name: array[:batch] for name, array in job.calibration.items()}
    try:
        atomic_write_bytes(reference, export.lower(job, ctx.fp32).data)
    except (EdgekitError, RuntimeError, ValueError) as exc:  # the candidates ran already; only the figure is lost
        reference.unlink(missing_ok=True)
        return [{"error": f"FP32 program not made: {type(exc).__name__}: {str(exc)[:160]}"} for _ in candidates]
    try:
        return time_against_fp32(reference, [c.path for c in candidates], feeds, fp32_timing)
    finally:
        reference.unlink(missing_ok=True)


def build(job: ExportJob) -> list[Artifact]:
    """Export ``job.model`` to ExecuTorch at ``job.request.precision``; one Artifact per working recipe."""
    request = job.request
    options = parse_options("executorch", dict(request.options), request.precision,
                            f"target {job.profile.name} {request.label}")
    if request.io != "float":
        raise UnsupportedModelError(
            f"target {job.profile.name} asks for executorch with {request.io} I/O, which this backend does not make",
            'Use io = "float" for executorch artifacts (integer I/O is a TFLite Micro feature)',
        )
    if request.precision not in RECIPES:
        raise InternalError(f"the executorch backend has no recipe for precision '{request.precision}'")
    ctx = _Context(job, options.max_batch, export.export(job, job.model, options.max_batch))
    made = [_candidate(ctx, recipe) for recipe in RECIPES[request.precision]]
    kept = [artifact for artifact in made if artifact is not None]
    if not kept:
        raise none_made("executorch", request.precision, job.profile.name, ctx.notes)
    timings = _time_against_fp32(ctx, kept) if request.precision != "fp32" else [None] * len(kept)
    return finished(kept, ctx.notes, timings)
