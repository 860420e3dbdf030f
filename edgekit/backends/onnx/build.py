"""ONNX backend build: export once, then every candidate a precision has (the pipeline keeps the best).

Candidates per precision (each measured by the pipeline; it ships the fastest
that meets every budget, the fidelity bar included; see edgekit.select):

| precision | candidates (variant names) | compute |
|---|---|---|
| fp32 | ``fp32``: the dynamo export | float |
| fp16 | ``fp16``: float16 weights and compute, float32 I/O, sorted topologically | fp16 |
| int8 | ``qdq-static-u8s8``, ``qoperator-static-u8s8``: quantize_static, per-channel int8 weights, uint8 activations, MinMax calibration (once, cached), outlier ranges (> 1e4) kept float, then the fallback search | integer kernels |
| int8 | ``dynamic``: quantize_dynamic on the folded graph (Gemm as MatMul, LSTM as DynamicQuantizeLSTM), conv weights stored int8 but computed float (ConvInteger ran 4.9-10x FP32), with the fallback search | integer MatMul/LSTM, float elsewhere |
| int8 | ``weight-only-int8``: int8 codes dequantized by Cast -> Mul, which onnxruntime folds at load (FP32 speed), embeddings as GatherBlockQuantized bits=8 | float |
| dynamic-int8 | ``dynamic`` as above | as above |
| int4 | ``int4-weight-only``: MatMulNBits, GatherBlockQuantized, folded int4 Conv / recurrent weights, layers raised to int8 by the fallback search | MatMulNBits int8 compute, float elsewhere |

Every int8 candidate also stores what onnxruntime's quantizers leave float
in int8 (GRU/LSTM/RNN weights, sliced constant tables), folded at load. A
candidate whose census shows no weight in the requested precision is dropped
with a note: an "int8" file with nothing quantized never ships.

Fidelity: each candidate is measured on the calibration split against the
FP32 outputs (``job.reference``) and the bar is ``job.fidelity``, with top-1
agreement raised to 1 - the accuracy-drop budget for classifiers (``_bar``).
Candidates that miss it run the budgeted fallback search (``fallback.py``):

- static and dynamic first try 7-bit weights (one round;
  ``quantize.REDUCE_RANGE_WHY``), then static keeps float the nodes around
  the quantized activation tensors with the most local quantization noise,
  dynamic the noisiest MatMuls / lookups / LSTMs; nodes kept float still store their
  weights int8 (``quantize.weights_of_float_nodes``) when the bar holds;
- int4 raises the noisiest layers per weight to int8.

Each search tries at most ``fallback.MAX_ROUNDS`` exclusion sets whatever
the graph size. ``details["fallback"]`` records the bar, the metrics before
and after, the rounds (steps included) and the nodes kept (with their
PyTorch modules); ``config["kept_float_for_fidelity"]`` lists the node names.

Every candidate carries ``details["coverage"]`` (``coverage.py``) and, for
precisions other than fp32, ``details["vs_fp32"]``: the FP32 export timed
against every candidate in one interleaved run (``fp32_timing``; one
thread; a real sample, at the model's fixed batch when it has one).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgekit.artifact import Artifact, sha256_file
from edgekit.backends import ExportJob, parse_options
from edgekit.backends.model_key import model_key
from edgekit.backends.candidates import STORED_AS, finished, none_made, nothing_stored_in, time_against_fp32
from edgekit.backends.onnx import coverage, fallback, fp32_timing, graph, int4, quantize, weights
from edgekit.backends.onnx import export as exporter
from edgekit.backends.onnx.census import NodeWeights, float_weight_ops, weight_census
from edgekit.backends.onnx.graph import ModuleMap
from edgekit.backends.onnx.versions import min_onnxruntime
from edgekit.batching import pad_to
from edgekit.errors import InternalError, UnsupportedModelError
from edgekit.fidelity import FidelityTarget

# Ops each onnxruntime tool quantizes; a float op outside the set is reported as "not supported".
_DYNAMIC_OPS = frozenset({"MatMul", "Conv", "Gather", "LSTM", "Attention", "EmbedLayerNormalization", "GRU", "RNN"})
_DYNAMIC_UNITS = frozenset({"MatMul", "Gemm", "Gather", "LSTM"})
_STATIC_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather", "GRU", "LSTM", "RNN"})  # with weights
_WEIGHT_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "GRU", "LSTM", "RNN", "Gather"})
_FAST_PATH = {
    "qdq": "integer kernels where onnxruntime fuses the QDQ groups",
    "qoperator": "integer QLinear ops",
    "dynamic": "integer MatMul/LSTM with activations quantized per run; convs float with int8 weights",
    "weight-only": "weight-only: int8 weights dequantized once at load, float compute by design",
    "int4": "MatMulNBits (int8 compute) and GatherBlockQuantized; Conv/recurrent weights dequantized once at load",
}


@dataclass
class _Context:
    """What every recipe of one job shares: the FP32 export, the module map, the FP32 outputs, notes."""

    job: ExportJob
    fp32: Path
    modules: ModuleMap
    reference: tuple[np.ndarray, ...]
    bar: FidelityTarget = field(default_factory=FidelityTarget)  # what the searches aim at (``_bar``)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def measure(self, path: Path) -> dict[str, float]:
        """Fidelity of ``path`` on the calibration split against the FP32 outputs."""
        return fallback.fidelity(path, self.job.calibration, self.reference, self.job.fixed_batch)

    def module_of(self, name: str, first_output: str | None = None) -> str | None:
        return self.modules.module(name, first_output)


def _bar(job: ExportJob) -> FidelityTarget:
    """``job.fidelity``, with top-1 agreement raised to 1 - the accuracy-drop budget when the model has classes.

    Labels are for evaluation only, so agreement with FP32 on the calibration
    split is the backend's stand-in for the accuracy budget: a search that
    stops at the fidelity bar's 0.90 agreement would hand over an int4 that
    then fails a 1 % accuracy budget (measured on the tiny CNN: 1.6 % drop).
    """
    bar = job.fidelity
    drop = job.profile.budgets_for(job.request.precision).max_accuracy_drop
    if bar.min_top1_agreement is None or drop is None:
        return bar
    return FidelityTarget(bar.min_cosine, max(bar.min_top1_agreement, 1.0 - drop), bar.min_sqnr_db)


# FP32 exports of this process by model content, with the file's sha256: one build exports once for
# all its ONNX requests (the dynamo export takes ~15 s on a 224x224 MobileNetV2, four times for a
# profile asking for four precisions). The hash guards against a later job reusing the folder.
_EXPORTS: dict[str, tuple[Path, str]] = {}


def _fp32(job: ExportJob) -> Path:
    """The FP32 export of ``job.model``: made once per process and model, copied into this job's folder."""
    path = job.workdir / f"{job.stem}.fp32.onnx"
    if path.exists():
        return path
    inputs = {spec.name: tensor for spec, tensor in zip(job.inputs, job.example_inputs)}
    key = model_key(job.model, inputs, ("onnx", str(job.fixed_batch), *job.output_names))
    earlier, digest = _EXPORTS.get(key, (None, ""))
    modules = graph.modules_file
    if earlier is not None and earlier.exists() and modules(earlier).exists() and sha256_file(earlier) == digest:
        shutil.copyfile(earlier, path)
        shutil.copyfile(modules(earlier), modules(path))
    else:
        exporter.export(job, path)
        _EXPORTS[key] = (path, sha256_file(path))
    return path


def _reference(job: ExportJob, fp32: Path) -> tuple[np.ndarray, ...]:
    """The FP32 outputs on the calibration split: ``job.reference`` (torch), or the FP32 export's own."""
    if job.reference:
        return tuple(job.reference)
    return tuple(fallback.run(fp32, job.calibration, job.fixed_batch))


def _artifact(ctx: _Context, path: Path, variant: str, config: dict[str, Any], details: dict[str, Any] | None = None,
              reason_of: Callable[[NodeWeights], str] | None = None, fast_path: str = "") -> Artifact | None:
    """An Artifact for ``path`` with census and coverage; None (and a note) when ``onnx.checker``
    rejects the file or nothing is in the precision."""
    job = ctx.job
    invalid = graph.checker_problem(path)
    if invalid:  # onnxruntime may run it, but other ONNX consumers would refuse it
        ctx.notes.append(f"{variant}: dropped, onnx.checker rejects it: {invalid}")
        return None
    model = onnx.load(str(path), load_external_data=False)
    census = weight_census(model)
    empty = nothing_stored_in(job.request.precision, census["by_precision"])
    if empty:
        ctx.notes.append(f"{variant}: dropped, {empty}")
        return None
    expected = STORED_AS[job.request.precision]
    facts: dict[str, Any] = {"weights": census, "float_weights_by_op": float_weight_ops(census) if expected != "fp32" else {},
                             "min_runtime_version": min_onnxruntime(model)}
    try:
        reason_of = reason_of or coverage.reasons(lambda _: None, "this recipe")
        record = coverage.measure(path, job.request.precision, reason_of, ctx.module_of, fast_path)
        facts["coverage"] = record.as_dict()
    except Exception as exc:  # coverage is a report; a failure to measure it must not drop the candidate
        ctx.notes.append(f"{variant}: coverage not measured ({type(exc).__name__}: {str(exc)[:120]})")
    facts.update(details or {})
    return Artifact(path, "onnx", job.request.precision, variant, parent=f"{job.stem}.fp32.onnx", config=config,
                    details=facts)


def _time_against_fp32(job: ExportJob, fp32: Path, candidates: list[Artifact]) -> list[dict[str, Any]]:
    """Each candidate's ``vs_fp32`` record: the FP32 export and every candidate timed in one interleaved run."""
    # One real sample (a whole fixed batch when the model has one): the calibration split is keyed by input name.
    rows = job.fixed_batch or 1
    feeds = pad_to({name: array[:rows] for name, array in job.calibration.items()}, rows)[0]
    return time_against_fp32(fp32, [a.path for a in candidates], feeds, fp32_timing)


# ---------------------------------------------------------------- recipes


def _kept_reasons(kept: list[str], outliers: list[str]) -> Callable[[str], str | None]:
    """The build's own reasons for float nodes: the outlier guard, then the fallback search."""
    kept_set, outlier_set = set(kept), set(outliers)

    def reason(name: str) -> str | None:
        if name in outlier_set:
            return f"kept float: calibrated range > {quantize.RANGE_LIMIT:g} (outlier, e.g. an attention mask bias)"
        if name in kept_set:
            return "kept float for fidelity (fallback search)"
        return None

    return reason


def _reduce_range_step(ctx: _Context, path: Path, before: dict[str, float],
                       make: Callable[[Path], object]) -> tuple[bool, dict[str, float], dict[str, Any]]:
    """The first fallback round of u8s8 recipes: 7-bit weights; kept (file moved to ``path``) when it scores better.

    Returns (reduce_range chosen, the metrics of the file now at ``path``, the step's record).
    """
    trial_path = path.with_name(f"{path.stem}.reduce-range.onnx")
    make(trial_path)
    metrics = ctx.measure(trial_path)
    better = fallback.score(metrics, ctx.bar) > fallback.score(before, ctx.bar)
    if better:
        trial_path.replace(path)
    else:
        trial_path.unlink(missing_ok=True)
    step = {"step": "reduce_range", "why": quantize.REDUCE_RANGE_WHY, "kept": better,
            **{k: round(v, 6) for k, v in metrics.items()}}
    return better, (metrics if better else before), step


def _store_kept_weights(ctx: _Context, path: Path, nodes: list[str],
                        metrics: dict[str, float] | None) -> tuple[dict[str, float] | None, list[str]]:
    """Store the weights of nodes kept float in int8 (``quantize.weights_of_float_nodes``), if the bar still holds.

    Returns the metrics of the file now at ``path`` and the nodes whose weights went to int8
    (none when that would make a candidate that met the bar miss it: the file is restored).
    """
    backup = path.with_name(f"{path.stem}.before-int8-weights.onnx")
    shutil.copyfile(path, backup)
    changed = quantize.weights_of_float_nodes(path, nodes)
    if not changed or metrics is None:
        backup.unlink()
        return metrics, changed
    after = ctx.measure(path)
    if ctx.bar.met_by(metrics) and not ctx.bar.met_by(after):
        backup.replace(path)
        return metrics, []
    backup.unlink()
    return after, changed


def _finished(metrics: dict[str, float], bar: FidelityTarget) -> fallback.Outcome:
    """An empty search outcome: the bar was met (or not) before any node was kept out."""
    return fallback.Outcome([], metrics, bar.met_by(metrics), 0, None)


def _adopt(searched: fallback.Outcome, path: Path, metrics: dict[str, float], bar: FidelityTarget) -> fallback.Outcome:
    """The search's file replaces ``path`` when it met the bar; otherwise the candidate stays as it was.

    A search that cannot reach the bar would only trade speed (float islands
    between integer kernels; MobileNetV2's static went 0.66x -> 1.18x FP32)
    for a fidelity that still fails; what each round measured stays in the
    record (``tried``).
    """
    if searched.path is not None and searched.met:
        searched.path.replace(path)
        searched.path = path
        return searched
    if searched.path is not None:
        searched.path.unlink(missing_ok=True)
    return fallback.Outcome([], metrics, bar.met_by(metrics), searched.rounds, None, searched.tried)


def _static(ctx: _Context) -> list[Artifact | None]:
    """Static QDQ and QOperator with one calibration, the outlier guard and the fallback search."""
    job, out = ctx.job, ctx.job.workdir
    started = time.perf_counter()
    source, prep_note = quantize.preprocess(ctx.fp32, out / f"{job.stem}.pre.onnx")
    ctx.notes.append(prep_note)
    cache = quantize.calibrate(source, job.calibration, out / f"{job.stem}.calibration.json", job.fixed_batch)
    exclude, wide = quantize.outlier_nodes(source, cache)
    if wide:
        ctx.notes.append(f"kept float (calibrated range > {quantize.RANGE_LIMIT:g}): {', '.join(exclude)}")
    samples = len(next(iter(job.calibration.values())))
    source_model = onnx.load(str(source))
    ops_of = {n.name: n.op_type for n in source_model.graph.node}
    results: list[Artifact | None] = []
    kept: list[str] = []
    reduce_range = False
    search_record: dict[str, Any] | None = None
    qdq_path = out / f"{job.stem}.qdq-static-u8s8.onnx"
    qdq_details: dict[str, Any] = {}
    try:
        quantize.int8_static(source, qdq_path, "qdq", exclude, cache)
        if ctx.bar.required:
            before = ctx.measure(qdq_path)
            qdq_details["calibration_fidelity"] = before
            if not ctx.bar.met_by(before):
                reduce_range, metrics, step = _reduce_range_step(
                    ctx, qdq_path, before, lambda p: quantize.int8_static(source, p, "qdq", exclude, cache, True))
                outcome = _finished(metrics, ctx.bar)
                signal = "none: 7-bit weights alone met the bar"
                if not outcome.met:
                    searched, signal = _static_search(ctx, source, source_model, qdq_path, exclude, cache, reduce_range)
                    outcome = _adopt(searched, qdq_path, metrics, ctx.bar)
                kept = fallback.members(outcome.kept)
                search_record = fallback.record(ctx.bar, before, outcome, signal, ctx.module_of,
                                                lambda n: ops_of.get(n, "?"), "kept float", [step])
                search_record["reduce_range"] = reduce_range
                qdq_details.update(fallback=search_record, calibration_fidelity=outcome.metrics)
                ctx.notes.append(f"qdq-static-u8s8: fallback kept {len(kept)} node(s) float"
                                 f"{', 7-bit weights' if reduce_range else ''} in {search_record['rounds']} round(s), "
                                 f"bar {'met' if outcome.met else 'missed'}")
        metrics, stored = _store_kept_weights(ctx, qdq_path, exclude + kept, qdq_details.get("calibration_fidelity"))
        if stored:
            qdq_details["kept_float_weights_int8"] = stored
            if metrics is not None:
                qdq_details["calibration_fidelity"] = metrics
                if search_record is not None:
                    search_record["after"] = {k: round(v, 6) for k, v in metrics.items()}
                    search_record["met"] = ctx.bar.met_by(metrics)
    except Exception as exc:  # one recipe failing must not sink the others
        ctx.notes.append(f"qdq-static-u8s8: failed ({type(exc).__name__}: {str(exc)[:160]})")
        qdq_path = None
    base_config = {"tool": "onnxruntime quantize_static", "per_channel": True, "activations": "uint8",
                   "weights": "int8 (7-bit range)" if reduce_range else "int8", "reduce_range": reduce_range,
                   "calibration": "minmax", "calibration_samples": samples, "excluded_nodes": exclude,
                   "kept_float_for_fidelity": kept}
    reason = coverage.reasons(_kept_reasons(kept, exclude), "onnxruntime quantize_static", _STATIC_OPS)
    if qdq_path is not None:
        results.append(_artifact(ctx, qdq_path, "qdq-static-u8s8", {**base_config, "format": "qdq"}, qdq_details,
                                 reason, _FAST_PATH["qdq"]))
    # QOperator: the same ranges, 7-bit choice and kept nodes as the QDQ search found (one more round, not a search).
    qop_path = out / f"{job.stem}.qoperator-static-u8s8.onnx"
    try:
        quantize.int8_static(source, qop_path, "qoperator", exclude + kept, cache, reduce_range)
        details: dict[str, Any] = {}
        metrics, stored = _store_kept_weights(ctx, qop_path, exclude + kept,
                                              ctx.measure(qop_path) if ctx.bar.required else None)
        if stored:
            details["kept_float_weights_int8"] = stored
        if metrics is not None:
            details["calibration_fidelity"] = metrics
            if search_record is not None:
                details["fallback"] = {**search_record, "after": metrics, "met": ctx.bar.met_by(metrics), "rounds": 1,
                                       "signal": "what the qdq-static search chose, applied as it is", "tried": [],
                                       "steps": []}
        results.append(_artifact(ctx, qop_path, "qoperator-static-u8s8", {**base_config, "format": "qoperator"},
                                 details, reason, _FAST_PATH["qoperator"]))
    except Exception as exc:
        ctx.notes.append(f"qoperator-static-u8s8: failed ({type(exc).__name__}: {str(exc)[:160]})")
    ctx.seconds["static"] = round(time.perf_counter() - started, 2)
    return results


def _static_search(ctx: _Context, source: Path, source_model: onnx.ModelProto, path: Path, exclude: list[str],
                   cache: Path, reduce_range: bool) -> tuple[fallback.Outcome, str]:
    """Keep the nodes around the noisiest quantized tensors float until the bar is met.

    Returns the outcome (its ``path`` is the chosen trial's file, beside ``path``) and the signal's description.
    """
    candidate = onnx.load(str(path))
    static_ops = set(quantize.static_op_types())
    quantizable = {n.name for n in source_model.graph.node if n.op_type in static_ops and n.name not in set(exclude)}
    suspects = fallback.rank_tensors(source_model, candidate, quantizable, ctx.job.calibration, ctx.job.fixed_batch)
    trials: list[Path] = []

    def trial(keep: list[str]) -> tuple[Path, dict[str, float]]:
        trial_path = path.with_name(f"{path.stem}.trial{len(trials)}.onnx")
        trials.append(trial_path)
        quantize.int8_static(source, trial_path, "qdq", exclude + keep, cache, reduce_range)
        return trial_path, ctx.measure(trial_path)

    outcome = fallback.search(suspects, trial, ctx.bar)
    for leftover in trials:
        if leftover != outcome.path:
            leftover.unlink(missing_ok=True)
    samples = min(fallback.SIGNAL_SAMPLES, len(next(iter(ctx.job.calibration.values()))))
    signal = ("local quantization noise of each quantized activation tensor (FP32 values against the same values "
              f"quantized with the candidate's own scale and zero point) on {samples} calibration samples; "
              "the nodes producing or reading the noisiest tensors are kept float")
    return outcome, signal


def _dynamic(ctx: _Context) -> Artifact | None:
    """Dynamic INT8 on the folded graph; when it misses the bar, 7-bit weights, then the noisiest MatMuls float."""
    job, out = ctx.job, ctx.job.workdir
    started = time.perf_counter()
    path = out / f"{job.stem}.dynamic.onnx"
    details: dict[str, Any] = {}
    kept: list[str] = []
    reduce_range = False
    try:
        source = out / f"{job.stem}.pre.onnx"
        if not source.exists():
            source, note = quantize.preprocess(ctx.fp32, source)
            ctx.notes.append(note)
        quantize.int8_dynamic(source, path)
        if ctx.bar.required:
            before = ctx.measure(path)
            details["calibration_fidelity"] = before
            if not ctx.bar.met_by(before):
                reduce_range, metrics, step = _reduce_range_step(
                    ctx, path, before, lambda p: quantize.int8_dynamic(source, p, reduce_range=True))
                outcome, signal = _finished(metrics, ctx.bar), "none: 7-bit weights alone met the bar"
                source_model = onnx.load(str(source))
                ops_of = {n.name: n.op_type for n in source_model.graph.node}
                if not outcome.met:
                    rr = reduce_range
                    searched, signal = _node_search(ctx, source_model, path, _DYNAMIC_UNITS,
                                                    lambda keep, target: quantize.int8_dynamic(source, target, keep, rr))
                    outcome = _adopt(searched, path, metrics, ctx.bar)
                kept = fallback.members(outcome.kept)
                record = fallback.record(ctx.bar, before, outcome, signal, ctx.module_of, lambda n: ops_of.get(n, "?"),
                                         "kept float", [step])
                record["reduce_range"] = reduce_range
                metrics, stored = _store_kept_weights(ctx, path, kept, outcome.metrics)
                if stored:
                    details["kept_float_weights_int8"] = stored
                    record["after"] = {k: round(v, 6) for k, v in metrics.items()}
                    record["met"] = ctx.bar.met_by(metrics)
                details.update(fallback=record, calibration_fidelity=metrics)
                ctx.notes.append(f"dynamic: fallback kept {len(kept)} node(s) float{', 7-bit weights' if reduce_range else ''}"
                                 f" in {record['rounds']} round(s), bar {'met' if outcome.met else 'missed'}")
    except Exception as exc:
        ctx.notes.append(f"dynamic: failed ({type(exc).__name__}: {str(exc)[:160]})")
        return None
    finally:
        ctx.seconds["dynamic"] = round(time.perf_counter() - started, 2)
    config = {"tool": "onnxruntime quantize_dynamic", "per_channel": True, "reduce_range": reduce_range,
              "weights": "int8 (7-bit range)" if reduce_range else "int8", "kept_float_for_fidelity": kept}
    reason = coverage.reasons(_kept_reasons(kept, []), "onnxruntime quantize_dynamic", _DYNAMIC_OPS)
    return _artifact(ctx, path, "dynamic", config, details, reason, _FAST_PATH["dynamic"])


def _node_search(ctx: _Context, source_model: onnx.ModelProto, path: Path, unit_ops: frozenset[str],
                 make: Callable[[list[str], Path], object]) -> tuple[fallback.Outcome, str]:
    """Fallback search over whole nodes (added-noise signal); the outcome's ``path`` is the chosen trial's file."""
    candidate = onnx.load(str(path))
    units = [n.name for n in source_model.graph.node if n.op_type in unit_ops]
    suspects = fallback.rank(source_model, candidate, units, ctx.job.calibration, ctx.job.fixed_batch)
    trials: list[Path] = []

    def trial(keep: list[str]) -> tuple[Path, dict[str, float]]:
        trial_path = path.with_name(f"{path.stem}.trial{len(trials)}.onnx")
        trials.append(trial_path)
        make(keep, trial_path)
        return trial_path, ctx.measure(trial_path)

    outcome = fallback.search(suspects, trial, ctx.bar)
    for leftover in trials:
        if leftover != outcome.path:
            leftover.unlink(missing_ok=True)
    samples = min(fallback.SIGNAL_SAMPLES, len(next(iter(ctx.job.calibration.values()))))
    return outcome, fallback.SIGNAL.format(n=samples)


def _weight_only(ctx: _Context) -> Artifact | None:
    """int8 weights, folded at load (embeddings: GatherBlockQuantized), float compute."""
    job = ctx.job
    started = time.perf_counter()
    path = job.workdir / f"{job.stem}.weight-only-int8.onnx"
    try:
        quantize.int8_weight_only(ctx.fp32, path)
        details = {"calibration_fidelity": ctx.measure(path)} if ctx.bar.required else {}
    except Exception as exc:
        ctx.notes.append(f"weight-only-int8: failed ({type(exc).__name__}: {str(exc)[:160]})")
        return None
    finally:
        ctx.seconds["weight-only"] = round(time.perf_counter() - started, 2)
    config = {"tool": "edgekit weight rewrite (int8 codes, Cast -> Mul folded at load; GatherBlockQuantized bits=8)",
              "weights": "int8",
              "per_channel": True, "compute": "float", "kept_float_for_fidelity": []}
    reason = coverage.reasons(lambda _: None, "the weight-only rewrite", _WEIGHT_OPS, weights.MIN_GATHER_ELEMENTS)
    return _artifact(ctx, path, "weight-only-int8", config, details, reason, _FAST_PATH["weight-only"])


def _int4(ctx: _Context) -> Artifact | None:
    """INT4 weights everywhere they can go, raised to int8 per layer where the bar needs it."""
    job = ctx.job
    started = time.perf_counter()
    path = job.workdir / f"{job.stem}.int4.onnx"
    bar = ctx.bar if ctx.bar.required else None
    _, record = int4.int4_weight_only(ctx.fp32, path, job.calibration, ctx.reference, bar, job.fixed_batch)
    ctx.seconds["int4"] = round(time.perf_counter() - started, 2)
    raised = record["raised_to_int8"]
    details: dict[str, Any] = {}
    if "metrics" in record:
        details["calibration_fidelity"] = record["metrics"]
    if "search" in record:
        search = record["search"]
        prepared, _ = int4.prepare(ctx.fp32)
        ops_of = {n.name: n.op_type for n in prepared.graph.node}
        details["fallback"] = fallback.record(ctx.bar, search["before"], search["outcome"], search["signal"],
                                              ctx.module_of, lambda n: ops_of.get(n, "?"), "raised to int8")
        details["fallback"]["raised_to_int8"] = details["fallback"].pop("kept_float")
        details["fallback"]["kept_float"] = []
        ctx.notes.append(f"int4: raised {len(raised)} layer(s) to int8 for fidelity in "
                         f"{search['outcome'].rounds} round(s), bar {'met' if search['outcome'].met else 'missed'}")
    config = {"tool": "edgekit int4 (MatMulNBits, GatherBlockQuantized, folded int4 Conv/recurrent weights)",
              "block_size": int4.INT4_BLOCK, "gather_block_size": int4.GATHER_BLOCK, "symmetric": True,
              "blocked_convs": record["blocked_convs"], "small_layers_int8": record["small_layers_int8"],
              "min_int4_weights": int4.MIN_INT4_WEIGHTS, "raised_to_int8": raised,
              "nodes_left_float": record["gemm_left_float"], "kept_float_for_fidelity": []}
    gemm_left = set(record["gemm_left_float"])

    def explicit(name: str) -> str | None:
        if name in gemm_left:
            return "Gemm with transA, alpha/beta != 1 or a non-constant B cannot become MatMulNBits"
        return None

    reason = coverage.reasons(explicit, "the int4 recipe", _WEIGHT_OPS, weights.MIN_GATHER_ELEMENTS)
    return _artifact(ctx, path, "int4-weight-only", config, details, reason, _FAST_PATH["int4"])


def _fp32_candidate(ctx: _Context) -> Artifact | None:
    # The FP32 program is held to the FP32 model by validation's float-agreement check, whatever the profile says.
    config = {"exporter": "torch.onnx dynamo", "opset": exporter.OPSET, "fixed_batch": ctx.job.fixed_batch}
    return _artifact(ctx, ctx.fp32, "fp32", config, {"float_agreement": "fp32"})


def _fp16(ctx: _Context) -> Artifact | None:
    # FP16 is judged by its quality bar: ONNX FP16 differs from torch by FP16 rounding alone (1.6e-2 scaled on the
    # tokens sample, more than the Core ML-calibrated 1e-2, with or without LayerNorm / Softmax kept FP32).
    path = quantize.to_fp16(ctx.fp32, ctx.job.workdir / f"{ctx.job.stem}.fp16.onnx")
    details = {"calibration_fidelity": ctx.measure(path)} if ctx.job.fidelity.required else {}
    return _artifact(ctx, path, "fp16", {"tool": "onnxruntime float16", "keep_io_types": True}, details)


@dataclass(frozen=True)
class Recipe:
    """A named way to make candidates of a precision; ``make`` returns them, None for one it dropped (with a note)."""

    name: str
    make: Callable[[_Context], list[Artifact | None]]


def _one(make: Callable[[_Context], Artifact | None]) -> Callable[[_Context], list[Artifact | None]]:
    return lambda ctx: [make(ctx)]


# Per precision, the recipes every build tries, in order (table in the module docstring).
RECIPES: dict[str, tuple[Recipe, ...]] = {
    "fp32": (Recipe("fp32", _one(_fp32_candidate)),),
    "fp16": (Recipe("fp16", _one(_fp16)),),
    "int8": (Recipe("static (qdq, qoperator)", _static), Recipe("dynamic", _one(_dynamic)),
             Recipe("weight-only-int8", _one(_weight_only))),
    "dynamic-int8": (Recipe("dynamic", _one(_dynamic)),),
    "int4": (Recipe("int4-weight-only", _one(_int4)),),
}


def build(job: ExportJob) -> list[Artifact]:
    """Export and quantize for ``job.request``; return the candidates (at least one)."""
    parse_options("onnx", dict(job.request.options), job.request.precision, f"target {job.profile.name} {job.request.label}")
    if job.request.io != "float":
        raise UnsupportedModelError(
            f"target {job.profile.name} asks for onnx with {job.request.io} I/O, which the ONNX backend does not make",
            "Use io = \"float\" for onnx artifacts (integer I/O is a TFLite Micro feature)",
        )
    precision = job.request.precision
    if precision not in RECIPES:  # the config's Literal makes this unreachable; keep the error honest anyway
        raise InternalError(f"the onnx backend has no recipe for precision '{precision}'")
    started = time.perf_counter()
    fp32 = _fp32(job)
    export_seconds = round(time.perf_counter() - started, 2)
    needs_reference = precision != "fp32" and job.fidelity.required
    ctx = _Context(job, fp32, ModuleMap.load(fp32), _reference(job, fp32) if needs_reference else tuple(job.reference),
                   bar=_bar(job))
    ctx.seconds["export"] = export_seconds
    candidates = [candidate for recipe in RECIPES[precision] for candidate in recipe.make(ctx)]
    kept = [c for c in candidates if c is not None]
    if not kept:
        raise none_made("onnx", precision, job.profile.name, ctx.notes)
    timings = _time_against_fp32(job, fp32, kept) if precision != "fp32" else [None] * len(kept)
    return finished(kept, ctx.notes, timings, build_seconds=ctx.seconds)
