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
  both. k-means costs minutes on real-size models (121 s on a 224x224
  MobileNetV2), so above ``PALETTIZE_ALWAYS_BELOW`` weight elements
  ``palettize4`` is built only when ``int4-block32`` misses the fidelity bar
  (a note says so). On iOS 17, int4 per-block does not exist and the request
  is refused unless ``options = {palettize = 4}`` asks for palettization (iOS 16+).

Embedding tables (``gather`` on a constant) are compressed like every other
weight: on all-MiniLM-L6-v2 the 30522x384 table is half the parameters, and
int4 per-block reaches 0.140x the FP32 size with it.

``request.options`` (validated when the profile loads, see options.py):

- ``palettize = n``: n-bit palettization replaces linear quantization for
  int8/int4 requests (variant ``palettize{n}``).
- ``prune = s``: magnitude pruning to sparsity ``s`` first. With fp16/fp32 the
  weights are stored sparse (``fp16-sparse50``); with int8/int4/palettize it is
  joint compression (iOS 18). Pruning costs accuracy without retraining, so
  it is never applied unless asked for.
- ``weight_threshold = n``: tensors of at most n elements stay float
  (default 512); ``details["float_weights"]`` lists every weight that stayed
  float.

Fidelity: every compressed candidate is measured in the emulator on a bounded
calibration sample against ``job.reference`` (the FP32 torch outputs); when it
misses ``job.fidelity`` the search in ``sensitivity.py`` keeps the fewest
weights float (int4: int8 first) and the candidate is compressed again
(``config["kept_float_for_fidelity"]`` / ``config["int8_for_fidelity"]``,
``details["fallback"]`` with module paths, a note says so).

Every candidate records ``details["coverage"]`` (``edgekit.coverage``): weight
elements by stored precision and each weight left wider than requested with
why (below weight_threshold, kept for fidelity, normalisation kept FP32, ...).
Core ML places ops on the Neural Engine, GPU or CPU on the device, so there
is no fast-path figure off macOS (``fast_path`` says so).

Conversion (``export.py``) records which route and rewrites made the model
convert (``details["rewrites"]``, ``config["rewrites"]``). A model with a
fixed batch (``job.fixed_batch``) is converted at exactly that batch, and the
session and the search feed it padded chunks of that batch.

Options rather than extra precisions keep the request vocabulary shared with
the other backends; "palettized4" as a first-class precision would need a new
name in config.Precision.

A compressed candidate whose census shows nothing compressed is dropped. Each
artifact's details hold the census read from the saved package, the export
path (torch.export or jit.trace), whether the batch is flexible, and
``emulated = True``: off macOS it is validated by edgekit's emulator.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgekit.artifact import Artifact
from edgekit.backends import ExportJob, parse_options
from edgekit.backends.coreml import census, compress, export, runtime, sensitivity
from edgekit.backends.coreml.emulator.program import Package, load_package
from edgekit.backends.coreml.options import Options
from edgekit.coverage import BITS, REQUESTED_BITS, Coverage, FloatOp
from edgekit.errors import InternalError, UnsupportedModelError
from edgekit.fidelity import FidelityTarget

# Normalisations divide by a variance computed from many FP16 values; kept FP32 in the mixed candidate.
NORM_OPS = frozenset({"layer_norm", "instance_norm", "l2_norm"})
# Ops that carry a model's compute (for the coverage record's op count).
COMPUTE_OPS = frozenset({"conv", "conv_transpose", "linear", "matmul", "gather", "einsum"})
# iOS 18 int4 offers palettize4 beside int4-block32; its k-means (sklearn, one call per group of 16
# channels) is the slowest step of a build, so on models with more weight elements than this it is
# built only when int4-block32 misses the fidelity bar.
PALETTIZE_ALWAYS_BELOW = 1_000_000
FAST_PATH = ("emulated off macOS: Core ML places each op on the Neural Engine, GPU or CPU when the model loads on "
             "the device, so no fast-path share is measured; compressed weights are decompressed on load or on the "
             "fly (weight-only compression, float compute)")


class _Context:
    """Per-job state: options, target iOS, and the base conversions made so far."""

    def __init__(self, job: ExportJob) -> None:
        self.job = job
        self.options: Options = parse_options("coreml", dict(job.request.options), job.request.precision,
                                              f"target {job.profile.name} {job.request.label}")
        self.min_ios = export.min_ios(job)
        self.bases: dict[tuple[str, tuple[str, ...]], tuple[export.Exported, Path]] = {}
        self.notes: list[str] = []
        self.route: tuple[Any, ...] = ()
        self.source: Any = None
        self.modules = export.ModuleMap()
        self._evaluator: sensitivity.Evaluator | None = None
        self._int8: dict[str, np.ndarray] | None = None

    def base(self, compute: str, fp32_ops: tuple[str, ...] = (), variant: str | None = None) -> tuple[export.Exported, Path]:
        """The plain conversion at ``compute`` precision, saved as ``{stem}.{variant or compute}.mlpackage``.

        The first conversion finds the route; later ones repeat it.
        """
        key = (compute, fp32_ops)
        if key not in self.bases:
            exported = export.convert(self.job, compute, fp32_ops, route=self.route, source=self.source)
            if not self.route:
                self.route, self.modules, self.source = exported.route, exported.modules, exported.source
            path = export.save(exported.model, self.path(variant or compute))
            self.notes.extend(n for n in exported.notes if n not in self.notes)
            self.bases[key] = (exported, path)
        return self.bases[key]

    def path(self, variant: str) -> Path:
        return self.job.workdir / f"{self.job.stem}.{variant}.mlpackage"

    def module_of(self, name: str, op_name: str | None = None) -> str | None:
        return self.modules.module_of(name, op_name)

    def evaluator(self, base: Package) -> sensitivity.Evaluator | None:
        """The search's evaluator (one per job); None when the calibration data lacks an input."""
        job = self.job
        if self._evaluator is None:
            if not job.calibration or any(name not in job.calibration for name, _ in base.main.inputs):
                return None
            self._evaluator = sensitivity.Evaluator(base, job.calibration, job.output_names, job.reference,
                                                    job.fidelity, job.request.precision)
        return self._evaluator

    def int8_decoded(self, model: Any, base_path: Path, base: Package) -> dict[str, np.ndarray]:
        """Every weight as int8 per-channel linear quantization decodes it (what an int4 search raises to)."""
        if self._int8 is None:
            scratch = self.job.workdir / ".int8-raise.mlpackage"
            try:
                result, _ = compress.linear(model, base_path, "int8", self.options)
                export.save(result, scratch)
                constants = self._evaluator.interpreter.constants if self._evaluator else {}
                self._int8 = {name: value for name, (value, _) in sensitivity.swaps(base, constants, scratch).items()}
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return self._int8


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


# ---------------------------------------------------------------------------------------------- coverage

# Census labels → the stored-precision names edgekit.coverage counts bits with. Palettized n-bit weights
# store n-bit indices (plus a small table) and count at the narrowest listed width that holds n bits;
# sparse forms count as the form of their non-zero values.
_LUT_AS = {1: "uint1", 2: "int2", 3: "int4", 4: "uint4", 6: "int8", 8: "uint8"}


def coverage_label(label: str) -> str:
    """A census label as a coverage precision name ("lut4" → "uint4", "sparse-int8" → "int8")."""
    label = label.removeprefix("sparse-")
    if label.startswith("lut"):
        return _LUT_AS.get(int(label[3:]), "uint8")
    return label


def _source_name(name: str) -> str:
    """The uncompressed weight's name: coremltools.optimize names a compressed one after it plus a suffix."""
    for suffix in ("_quantized", "_palettized", "_sparsified"):
        name = name.removesuffix(suffix)
    return name


def _float_reason(weight: dict[str, Any], config: dict[str, Any], options: Options, compressed: bool) -> str:
    name = _source_name(weight["name"])
    if name in config.get("kept_float_for_fidelity", ()):
        return "kept float: the fidelity search found it among the most damaging to compress"
    if name in config.get("int8_for_fidelity", ()):
        return "kept int8: the fidelity search found it among the most damaging at int4"
    if weight["op"] in config.get("fp32_ops", ()):
        return f"{weight['op']} kept FP32 in this mixed-precision candidate"
    if not compressed:
        return f"stored {weight['precision']}: the candidate's own precision"
    if weight["elements"] <= options.weight_threshold:
        return f"{weight['elements']} elements <= weight_threshold {options.weight_threshold}"
    return "coremltools' compression left it as it was"


def _coverage(ctx: _Context, package: Package, config: dict[str, Any], compressed: bool) -> dict[str, Any]:
    """``details["coverage"]`` of one candidate, from its census."""
    precision = ctx.job.request.precision
    weights = census.weights(package)
    by_precision: dict[str, int] = {}
    float_ops: list[FloatOp] = []
    limit = REQUESTED_BITS.get(precision, 32)
    for weight in weights:
        label = coverage_label(weight["precision"])
        by_precision[label] = by_precision.get(label, 0) + weight["elements"]
        wider = BITS.get(label, 32) > limit or (precision in ("int8", "int4") and label.startswith("fp"))
        if wider:
            float_ops.append(FloatOp(weight["op_name"], weight["op"], weight["elements"],
                                     _float_reason(weight, config, ctx.options, compressed),
                                     ctx.module_of(weight["name"], weight["op_name"])))
    compute = sum(1 for op in package.main.operations if op.type in COMPUTE_OPS)
    return Coverage(precision, by_precision, compute_ops=compute, fast_ops=None, fast_path=FAST_PATH,
                    float_ops=tuple(float_ops)).as_dict()


# ---------------------------------------------------------------------------------------------- artifacts


def _artifact(ctx: _Context, path: Path, variant: str, config: dict[str, Any], exported: export.Exported,
              notes: list[str], extra: dict[str, Any] | None = None) -> Artifact | None:
    job = ctx.job
    package = load_package(path)
    weights = census.weight_census(package)
    compressed = {k: v for k, v in weights["by_precision"].items() if k not in census.FLOAT_LABELS}
    if job.request.precision not in ("fp32", "fp16") or ctx.options.prune is not None:
        if not compressed:
            notes.append(f"{variant}: dropped, no weight was compressed (weight_threshold {ctx.options.weight_threshold})")
            return None
    config = {"converter": "coremltools", "convert_to": "mlprogram", "minimum_deployment_target": f"iOS{ctx.min_ios}",
              "compute_precision": exported.compute_precision, "export_path": exported.export_path,
              "rewrites": list(exported.rewrites), **config}
    details = {
        "weights": weights,
        "float_weights": census.float_weights(package) if compressed else [],
        # How this host validates it: edgekit's emulator, or Core ML itself on macOS (runtime.uses_core_ml).
        "emulated": not runtime.uses_core_ml(),
        "export_path": exported.export_path,
        "rewrites": list(exported.rewrites),
        "flexible_batch": exported.flexible_batch,
        "batch": exported.batch,
        "min_runtime_version": f"iOS {ctx.min_ios}",
        "deployment_target": package.deployment_target,
        "compute_precision": exported.compute_precision,
        "fp32_ops": list(exported.fp32_ops),
        "constexpr_ops": census.constexpr_ops(package),
        "coverage": _coverage(ctx, package, {**config, "fp32_ops": list(exported.fp32_ops)}, bool(compressed)),
        **(extra or {}),
    }
    if job.request.precision in ("fp32", "fp16") and ctx.options.prune is None:
        # A plain float program: validation holds it to the float-agreement limit of its compute
        # precision (validate.FLOAT_AGREEMENT), a check that can fail, so the candidate that ships is
        # one that computes what the model computes (fp16-norm32 when all-FP16 drifts too far).
        details["float_agreement"] = exported.compute_precision
    base_name = f"{job.stem}.{exported.compute_precision}.mlpackage"
    parent = base_name if path.name not in (base_name, f"{job.stem}.fp16-norm32.mlpackage") else None
    return Artifact(path, "coreml", job.request.precision, variant, parent=parent, config=config, details=details)


class Recipe(NamedTuple):
    """One compressed candidate: ``method`` is coremltools.optimize's ``linear`` (``argument``: the dtype,
    "int8" / "int4") or ``palettize`` (``argument``: bits)."""

    variant: str
    method: str
    argument: Any


def _recipes(precision: str, options: Options) -> list[Recipe]:
    """The compressed candidates of an int8/int4 request, as the options shape them."""
    if options.palettize is not None:
        recipes = [Recipe(f"palettize{options.palettize}", "palettize", options.palettize)]
    elif precision == "int8":
        recipes = [Recipe("int8-linear", "linear", "int8")]
    else:  # both 4-bit forms: which one is more accurate depends on the model, so both are measured
        recipes = [Recipe(f"int4-block{options.block_size}", "linear", "int4"), Recipe("palettize4", "palettize", 4)]
    if options.prune is not None:
        tag = f"sparse{round(options.prune * 100)}"
        recipes = [recipe._replace(variant=f"{recipe.variant}-{tag}") for recipe in recipes]
    return recipes


def _compress_once(ctx: _Context, model: Any, base_path: Path, variant: str, method: str, arg: Any,
                   keep_float: tuple[str, ...] = (), raise_int8: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    joint = ctx.options.prune is not None
    if method == "linear":
        return compress.linear(model, base_path, arg, ctx.options, joint=joint, keep_float=keep_float,
                               raise_int8=raise_int8)
    scratch = ctx.job.workdir / f".{variant}.check.mlpackage"
    try:
        result, config, guard_notes = compress.palettize(
            model, base_path, arg, ctx.min_ios, ctx.options, scratch, joint=joint, keep_float=keep_float,
            raise_int8=raise_int8)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ctx.notes.extend(f"{variant}: {note}" for note in guard_notes)
    return result, config


def _metrics_text(metrics: dict[str, float]) -> str:
    shown = [f"{k} {metrics[k]:.4g}" for k in ("cosine", "top1_agreement", "sqnr_db") if k in metrics]
    return ", ".join(shown)


def exported_compute(package: Package) -> str:
    """"FP16" when any compute op produces fp16 values, else "FP32"."""
    for op in package.main.operations:
        if op.type not in ("const", "cast") and not op.type.startswith("constexpr_") and \
                any(t.dtype == "fp16" for _, t in op.outputs):
            return "FP16"
    return "FP32"


def _keep_wider(ctx: _Context, model: Any, compressed: Any, base_path: Path, variant: str, method: str, arg: Any,
                names: tuple[str, ...], as_int8: bool, pairs: dict[str, Any],
                constants: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """The candidate with ``names`` kept float (or int8): palettized ones restored in place, linear ones redone.

    Returns (model, new config or None when the first config still holds).
    """
    if method == "palettize" and ctx.options.prune is None:  # a second k-means run would cost minutes
        restored = compress.restore(compressed, {pairs[n][1]["compressed_name"]: (n, constants[n]) for n in names})
        if as_int8:
            restored, _ = compress.linear(restored, base_path, "int8", ctx.options, keep_float=(),
                                          only=names)
        return restored, None
    return _compress_once(ctx, model, base_path, variant, method, arg, keep_float=() if as_int8 else names,
                          raise_int8=names if as_int8 else ())


def _fidelity_pass(ctx: _Context, model: Any, base_path: Path, variant: str, method: str, arg: Any,
                   path: Path, config: dict[str, Any], compressed: Any) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Measure the candidate on calibration data and run the fallback search when it misses the bar.

    Returns (path, config, extra details) of the candidate that ships.
    """
    base = load_package(base_path)
    evaluator = ctx.evaluator(base)
    if evaluator is None:
        ctx.notes.append(f"{variant}: not checked against the fidelity bar (the calibration data lacks a model input)")
        return path, config, {}
    constants = evaluator.interpreter.constants
    pairs = sensitivity.swaps(base, constants, path)
    raise_to = None
    if ctx.job.request.precision == "int4" and ctx.options.prune is None:
        def raise_to() -> dict[str, np.ndarray]:
            return ctx.int8_decoded(model, base_path, base)
    outcome = sensitivity.search(evaluator, base, pairs, raise_to)
    config = {**config, "calibration_fidelity": {"before": outcome.before, "after": outcome.after,
                                                 "samples": outcome.samples, "bar": outcome.bar.as_dict()}}
    extra: dict[str, Any] = {}
    if outcome.floor is not None and not outcome.bar.met_by(outcome.floor):
        config["calibration_fidelity"]["uncompressed"] = outcome.floor
        ctx.notes.append(
            f"{variant}: the uncompressed {exported_compute(base)} program itself misses the fidelity bar on "
            f"{outcome.samples} calibration samples ({'; '.join(outcome.bar.misses(outcome.floor))}), so no compressed "
            "candidate can clear it; the search aimed just below the uncompressed program instead "
            '(options = {compute_precision = "fp32"} computes in FP32)')
    if not outcome.searched:
        if not outcome.met and outcome.floor is None:
            ctx.notes.append(f"{variant}: misses the fidelity bar on {outcome.samples} calibration samples "
                             f"({'; '.join(outcome.bar.misses(outcome.before))}) and no weight could be kept wider")
        return path, config, extra
    names = tuple(w.name for w in outcome.kept)
    if names:
        as_int8 = outcome.kept_as == "int8"
        result, config2 = _keep_wider(ctx, model, compressed, base_path, variant, method, arg, names, as_int8, pairs,
                                      constants)
        path = export.save(result, ctx.path(variant))
        config = {**(config2 or config), "calibration_fidelity": config["calibration_fidelity"],
                  "kept_float_for_fidelity": [] if as_int8 else list(names),
                  "int8_for_fidelity": list(names) if as_int8 else []}
        if not sensitivity.decoded_matches(outcome, constants, path, base):  # measure what was saved instead
            after = evaluator.measure({n: v for n, (v, _) in sensitivity.swaps(base, constants, path).items()})
            outcome = dataclasses.replace(outcome, after=after, met=outcome.bar.met_by(after))
            config["calibration_fidelity"]["after"] = after
    extra["fallback"] = outcome.record(ctx.module_of)
    modules = sorted({ctx.module_of(w.name, w.op_name) or w.op_name for w in outcome.kept})
    verdict = "clears it" if outcome.met else f"still misses it ({'; '.join(outcome.bar.misses(outcome.after))})"
    ctx.notes.append(
        f"{variant}: missed the fidelity bar on {outcome.samples} calibration samples ({_metrics_text(outcome.before)}); "
        f"kept {len(names)} weight(s) {'int8' if outcome.kept_as == 'int8' else 'float'} "
        f"({', '.join(modules[:8])}{', ...' if len(modules) > 8 else ''}) after {outcome.rounds} emulated run(s): "
        f"{_metrics_text(outcome.after)}, {verdict}")
    return path, config, extra


def _compressed(ctx: _Context, model: Any, base_path: Path, exported: export.Exported,
                prune_config: dict[str, Any]) -> list[Artifact | None]:
    """The int8/int4 candidates; a recipe that fails is noted and the others go on."""
    made: list[Artifact | None] = []
    cleared = False
    for variant, method, arg in _recipes(ctx.job.request.precision, ctx.options):
        if method == "palettize" and ctx.options.palettize is None and cleared:
            elements = sum(w["elements"] for w in census.weights(load_package(base_path)))
            if elements > PALETTIZE_ALWAYS_BELOW:
                ctx.notes.append(
                    f"{variant}: not built: int4-block{ctx.options.block_size} clears the fidelity bar, and k-means "
                    f"over {elements / 1e6:.1f} M weights costs minutes (121 s for a 224x224 MobileNetV2's 2.2 M); "
                    "options = {palettize = 4} builds it")
                continue
        try:
            result, config = _compress_once(ctx, model, base_path, variant, method, arg)
            path = export.save(result, ctx.path(variant))
            path, config, extra = _fidelity_pass(ctx, model, base_path, variant, method, arg, path, config, result)
        except Exception as exc:  # one recipe failing must not sink the others
            ctx.notes.append(f"{variant}: failed ({type(exc).__name__}: {str(exc)[:200]})")
            continue
        if prune_config:
            config = {**config, "prune": prune_config}
        artifact = _artifact(ctx, path, variant, config, exported, ctx.notes, extra)
        measured = config.get("calibration_fidelity")
        cleared = cleared or (artifact is not None and measured is not None and
                              FidelityTarget(**measured["bar"]).met_by(measured["after"]))
        made.append(artifact)
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
