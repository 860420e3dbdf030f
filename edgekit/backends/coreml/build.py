"""Core ML backend build: convert once per compute precision, then one or more candidates.

Candidates per precision (files ``{stem}.{variant}.mlpackage`` in the job folder):

- fp32: FP32 weights and compute (``fp32``).
- fp16: FP16 weights and compute, float32 I/O (``fp16``); for models with
  normalisation layers also ``fp16-norm32``, the same program with
  ``layer_norm``/``instance_norm``/``l2_norm`` kept in FP32. Measured on the
  sample Transformer: 0.0118 max logit error all-FP16, 0.0090 with FP32
  norms; the FP32 ops may leave the Neural Engine, so both are offered and
  the pipeline measures them. Plain float candidates carry
  ``details["float_agreement"]`` (their compute precision), so validation
  fails one that misses the agreement limit (1e-2 FP16, 1e-4 FP32, see
  ``validate.FLOAT_AGREEMENT``) and selection ships one that meets it.
- int8: int8 per-channel linear weights over the FP16 program (``int8-linear``).
- int4: on iOS 18, int4 per-block linear weights (``int4-block32``) *and*
  4-bit k-means palettization (``palettize4``): both store 4 bits per weight
  and which is more accurate depends on the model, so the pipeline measures
  both. On iOS 17, int4 per-block does not exist and the request is refused
  unless ``options = {palettize = 4}`` asks for palettization (iOS 16+).

``request.options`` (validated, see compress.KNOWN_OPTIONS):

- ``palettize = n``: n-bit palettization replaces linear quantization for
  int8/int4 requests (variant ``palettize{n}``).
- ``prune = s``: magnitude pruning to sparsity ``s`` first. With fp16/fp32 the
  weights are stored sparse (``fp16-sparse50``); with int8/int4/palettize it is
  joint compression (iOS 18). Pruning costs accuracy without retraining, so
  it is never applied unless asked for.
- ``weight_threshold = n``: tensors of at most n elements stay float
  (default 512); ``details["float_weights"]`` lists every weight that stayed
  float.

Every compressed candidate is compared with the uncompressed program on the
job's calibration data in the emulator (``sensitivity.py``); below 99% top-1
agreement the most damaging weights are kept float and the candidate is
compressed again (``config["kept_float_for_accuracy"]``, a note says so).

Options rather than extra precisions keep the request vocabulary shared with
the other backends; "palettized4" as a first-class precision would need a new
name in config.Precision.

A compressed candidate whose census shows nothing compressed is dropped. Each
artifact's details hold the census read from the saved package, the export
path (torch.export or jit.trace), whether the batch is flexible, and
``emulated = True``: off macOS it is validated by edgekit's emulator.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edgekit.artifact import Artifact
from edgekit.backends import ExportJob
from edgekit.backends.coreml import census, compress, export, sensitivity
from edgekit.backends.coreml.emulator.program import load_package
from edgekit.errors import InternalError, UnsupportedModelError


# Normalisations divide by a variance computed from many FP16 values; kept FP32 in the mixed candidate.
NORM_OPS = frozenset({"layer_norm", "instance_norm", "l2_norm"})


class _Context:
    """Per-job state: options, target iOS, and the base conversions made so far."""

    def __init__(self, job: ExportJob) -> None:
        self.job = job
        self.options = compress.parse_options(dict(job.request.options), f"target {job.profile.name} {job.request.label}")
        self.min_ios = export.min_ios(job)
        self.bases: dict[tuple[str, tuple[str, ...]], tuple[export.Exported, Path]] = {}
        self.notes: list[str] = []

    def base(self, compute: str, fp32_ops: tuple[str, ...] = (), variant: str | None = None) -> tuple[export.Exported, Path]:
        """The plain conversion at ``compute`` precision, saved as ``{stem}.{variant or compute}.mlpackage``."""
        key = (compute, fp32_ops)
        if key not in self.bases:
            exported = export.convert(self.job, compute, fp32_ops)
            path = export.save(exported.model, self.path(variant or compute))
            self.notes.extend(n for n in exported.notes if n not in self.notes)
            self.bases[key] = (exported, path)
        return self.bases[key]

    def path(self, variant: str) -> Path:
        return self.job.workdir / f"{self.job.stem}.{variant}.mlpackage"


def _refuse_unsupported(ctx: _Context) -> None:
    job, precision, options = ctx.job, ctx.job.request.precision, ctx.options
    if job.request.io != "float":
        raise UnsupportedModelError(
            f"target {job.profile.name} asks for coreml with {job.request.io} I/O, which Core ML models do not take",
            'Use io = "float" for coreml artifacts',
        )
    if precision == "dynamic-int8":
        raise UnsupportedModelError(
            f"target {job.profile.name} asks for coreml dynamic-int8; Core ML has no dynamic activation quantization",
            'Use precision = "int8" (int8 weights, FP16 compute) for Core ML',
        )
    if precision == "int4" and ctx.min_ios == "17" and options.palettize is None:
        raise UnsupportedModelError(
            f"target {job.profile.name} has min_ios 17, but int4 per-block quantization needs iOS 18",
            'Use an iOS 18 profile, precision = "int8", or options = {palettize = 4} (4-bit palettization runs on iOS 16+)',
        )
    if options.prune is not None and precision in ("int8", "int4") and ctx.min_ios == "17":
        raise UnsupportedModelError(
            f"target {job.profile.name} has min_ios 17, but pruning combined with {precision} (joint compression) "
            "needs iOS 18",
            "Prune with fp16/fp32 precision on iOS 17, or use an iOS 18 profile",
        )
    if options.palettize is not None and precision in ("fp32", "fp16"):
        raise UnsupportedModelError(
            f"target {job.profile.name}: options.palettize applies to int8/int4 requests, not {precision}",
            'Use precision = "int8" or "int4" with palettize',
        )


def _artifact(ctx: _Context, path: Path, variant: str, config: dict[str, Any], exported: export.Exported,
              notes: list[str]) -> Artifact | None:
    job = ctx.job
    package = load_package(path)
    weights = census.weight_census(package)
    compressed = {k: v for k, v in weights["by_precision"].items() if k not in census.FLOAT_LABELS}
    if job.request.precision not in ("fp32", "fp16") or ctx.options.prune is not None:
        if not compressed:
            notes.append(f"{variant}: dropped, no weight was compressed (weight_threshold {ctx.options.weight_threshold})")
            return None
    details = {
        "weights": weights,
        "float_weights": census.float_weights(package) if compressed else [],
        "emulated": True,
        "export_path": exported.export_path,
        "flexible_batch": exported.flexible_batch,
        "min_runtime_version": f"iOS {ctx.min_ios}",
        "deployment_target": package.deployment_target,
        "compute_precision": exported.compute_precision,
        "fp32_ops": list(exported.fp32_ops),
        "constexpr_ops": census.constexpr_ops(package),
    }
    if job.request.precision in ("fp32", "fp16") and ctx.options.prune is None:
        # A plain float program: validation holds it to the float-agreement limit of its compute
        # precision (validate.FLOAT_AGREEMENT), a check that can fail, so the candidate that ships is
        # one that computes what the model computes (fp16-norm32 when all-FP16 drifts too far).
        details["float_agreement"] = exported.compute_precision
    config = {"converter": "coremltools", "convert_to": "mlprogram", "minimum_deployment_target": f"iOS{ctx.min_ios}",
              "compute_precision": exported.compute_precision, "export_path": exported.export_path, **config}
    base_name = f"{job.stem}.{exported.compute_precision}.mlpackage"
    parent = base_name if path.name not in (base_name, f"{job.stem}.fp16-norm32.mlpackage") else None
    return Artifact(path, "coreml", job.request.precision, variant, parent=parent, config=config, details=details)


def _recipes(precision: str, options: compress.Options) -> list[tuple[str, str, Any]]:
    """(variant, method, argument) for each compressed candidate of an int8/int4 request."""
    if options.palettize is not None:
        recipes = [(f"palettize{options.palettize}", "palettize", options.palettize)]
    elif precision == "int8":
        recipes = [("int8-linear", "linear", "int8")]
    else:  # both 4-bit forms: which one is more accurate depends on the model, so both are measured
        recipes = [(f"int4-block{options.block_size}", "linear", "int4"), ("palettize4", "palettize", 4)]
    if options.prune is not None:
        tag = f"sparse{round(options.prune * 100)}"
        recipes = [(f"{variant}-{tag}", method, arg) for variant, method, arg in recipes]
    return recipes


def _compress_once(ctx: _Context, model: Any, base_path: Path, variant: str, method: str, arg: Any,
                   keep_float: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    joint = ctx.options.prune is not None
    if method == "linear":
        return compress.linear(model, base_path, arg, ctx.options, joint=joint, keep_float=keep_float)
    scratch = ctx.job.workdir / f".{variant}.check.mlpackage"
    try:
        result, config, guard_notes = compress.palettize(
            model, base_path, arg, ctx.min_ios, ctx.options, scratch, joint=joint, keep_float=keep_float)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ctx.notes.extend(f"{variant}: {note}" for note in guard_notes)
    return result, config


def _compressed(ctx: _Context, model: Any, base_path: Path, exported: export.Exported,
                prune_config: dict[str, Any]) -> list[Artifact | None]:
    """The int8/int4 candidates; a recipe that fails is noted and the others go on.

    Each candidate is checked against the uncompressed program on the
    calibration data (``sensitivity.protect``); when it disagrees too much,
    the most damaging weights are kept float and it is compressed again.
    """
    made: list[Artifact | None] = []
    for variant, method, arg in _recipes(ctx.job.request.precision, ctx.options):
        try:
            result, config = _compress_once(ctx, model, base_path, variant, method, arg, ())
            path = export.save(result, ctx.path(variant))
            protection = sensitivity.protect(base_path, path, ctx.job.calibration)
            if protection.keep_float:
                result, config = _compress_once(ctx, model, base_path, variant, method, arg, protection.keep_float)
                path = export.save(result, ctx.path(variant))
                config["kept_float_for_accuracy"] = list(protection.keep_float)
                ctx.notes.append(
                    f"{variant}: top-1 agreement with the uncompressed model on calibration data was "
                    f"{protection.before:.3f}; kept {len(protection.keep_float)} weight(s) float "
                    f"({', '.join(protection.keep_float)}), expected agreement {protection.after:.3f}")
        except Exception as exc:  # one recipe failing must not sink the others
            ctx.notes.append(f"{variant}: failed ({type(exc).__name__}: {str(exc)[:200]})")
            continue
        if prune_config:
            config = {**config, "prune": prune_config}
        config["calibration_agreement"] = {"before": protection.before, "after": protection.after}
        made.append(_artifact(ctx, path, variant, config, exported, ctx.notes))
    return made


def build(job: ExportJob) -> list[Artifact]:
    """Convert and compress for ``job.request``; return the candidates (at least one)."""
    ctx = _Context(job)
    _refuse_unsupported(ctx)
    precision, options = job.request.precision, ctx.options
    if precision not in ("fp32", "fp16", "int8", "int4"):  # the config's Literal keeps this unreachable
        raise InternalError(f"coreml backend got unknown precision {precision}")
    exported, base_path = ctx.base("fp32" if precision == "fp32" else options.compute_precision)
    model, prune_config = exported.model, {}
    if options.prune is not None:
        model, prune_config = compress.prune(model, options.prune, options)
    made: list[Artifact | None]
    if precision in ("fp32", "fp16") and options.prune is None:
        made = [_artifact(ctx, base_path, precision, {}, exported, ctx.notes)]
        norms = tuple(sorted(NORM_OPS & {op.type for op in load_package(base_path).main.operations}))
        if precision == "fp16" and norms:
            mixed, mixed_path = ctx.base("fp16", norms, "fp16-norm32")
            made.append(_artifact(ctx, mixed_path, "fp16-norm32", {"fp32_ops": list(norms)}, mixed, ctx.notes))
    elif precision in ("fp32", "fp16"):
        variant = f"{precision}-sparse{round(options.prune * 100)}"  # type: ignore[operator]
        made = [_artifact(ctx, export.save(model, ctx.path(variant)), variant, {"prune": prune_config}, exported, ctx.notes)]
    else:
        made = _compressed(ctx, model, base_path, exported, prune_config)
    kept = [a for a in made if a is not None]
    if not kept:
        raise UnsupportedModelError(
            f"no {precision} coreml artifact could be made for target {job.profile.name}: {'; '.join(ctx.notes)}",
            "Lower options.weight_threshold so small layers are compressed too, or choose another precision",
        )
    return [Artifact(a.path, a.format, a.precision, a.variant, a.parent, a.config, {**a.details, "notes": list(ctx.notes)})
            for a in kept]
