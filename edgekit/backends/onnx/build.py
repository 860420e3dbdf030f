"""ONNX backend build: export once, then one or more candidates per precision.

Candidates per precision (the pipeline measures them and ships the fastest
that meets the accuracy budgets; see edgekit.select):

- fp32: the export.
- fp16: float16 weights and compute, float32 I/O.
- int8: static QDQ and static QOperator (per-channel int8 weights, uint8
  activations), plus dynamic when the graph has MatMul/Gemm. Measured on the
  samples: no single form wins everywhere, so each build measures.
- dynamic-int8: dynamic quantization only.
- int4: MatMulNBits for MatMul/Gemm (Gemm rewritten first) and int4
  DequantizeLinear weights for Conv.

A candidate whose census shows no weight in the requested precision is
dropped: an "int8" file with nothing quantized is never shipped.

For precisions other than fp32, the FP32 export is timed against every
candidate in one interleaved run (``fp32_timing``, batch 1 from the
calibration data, one thread) and each candidate gets ``details["vs_fp32"]``
(the same record as the TFLite backend's), which ``select.choose`` uses to
avoid shipping something slower than FP32. Timings of separate blocks moved
by up to 25% on a shared host; the paired ratio stays within about 2%.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgekit.artifact import Artifact
from edgekit.backends import ExportJob
from edgekit.backends.onnx import export as exporter
from edgekit.backends.onnx import fp32_timing, quantize
from edgekit.backends.onnx.census import float_weight_ops, weight_census
from edgekit.errors import EdgekitError, InternalError, UnsupportedModelError

_EXPECTED = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "dynamic-int8": "int8", "int4": "int4"}


def _fp32(job: ExportJob) -> Path:
    """The FP32 export, made once per job folder and reused by every precision."""
    path = job.workdir / f"{job.stem}.fp32.onnx"
    if not path.exists():
        exporter.export(job, path)
    return path


def _artifact(job: ExportJob, path: Path, variant: str, config: dict, notes: list[str]) -> Artifact | None:
    census = weight_census(onnx.load(str(path), load_external_data=False))
    expected = _EXPECTED[job.request.precision]
    if census["by_precision"].get(expected, 0) == 0:
        notes.append(f"{variant}: dropped, no weight ended up in {expected}")
        return None
    details = {"weights": census, "float_weights_by_op": float_weight_ops(census) if expected not in ("fp32",) else {}}
    return Artifact(path, "onnx", job.request.precision, variant, parent=f"{job.stem}.fp32.onnx", config=config, details=details)


def _time_against_fp32(job: ExportJob, fp32: Path, candidates: list[Artifact]) -> None:
    """Time the FP32 export and every candidate in one interleaved run; add ``details["vs_fp32"]``.

    A timing failure leaves the candidates with ``{"error": ...}`` instead of
    the figure (the selection then falls back to the pipeline's separate FP32
    latency) rather than failing the build: validation runs them anyway.
    """
    # One real sample, batch 1: the calibration split is keyed by the export's input names.
    feeds = {name: array[:1] for name, array in job.calibration.items()}
    try:
        timing = fp32_timing.interleaved([fp32] + [a.path for a in candidates], feeds)
    except (EdgekitError, ValueError) as exc:
        reason = exc.problem if isinstance(exc, EdgekitError) else f"{type(exc).__name__}: {str(exc)[:300]}"
        for artifact in candidates:
            artifact.details["vs_fp32"] = {"error": reason}
        return
    for artifact, own in zip(candidates, timing[1:]):
        artifact.details["vs_fp32"] = fp32_timing.comparison(own, timing[0])


def build(job: ExportJob) -> list[Artifact]:
    """Export and quantize for ``job.request``; return the candidates (at least one)."""
    if job.request.io != "float":
        raise UnsupportedModelError(
            f"target {job.profile.name} asks for onnx with {job.request.io} I/O, which the ONNX backend does not make",
            "Use io = \"float\" for onnx artifacts (integer I/O is a TFLite Micro feature)",
        )
    precision = job.request.precision
    fp32 = _fp32(job)
    notes: list[str] = []
    candidates: list[Artifact | None] = []
    out = job.workdir
    if precision == "fp32":
        candidates.append(_artifact(job, fp32, "fp32", {"exporter": "torch.onnx dynamo", "opset": exporter.OPSET}, notes))
    elif precision == "fp16":
        path = quantize.to_fp16(fp32, out / f"{job.stem}.fp16.onnx")
        candidates.append(_artifact(job, path, "fp16", {"tool": "onnxruntime float16", "keep_io_types": True}, notes))
    elif precision in ("int8", "dynamic-int8"):
        has_matmul = any(n.op_type in ("MatMul", "Gemm") for n in onnx.load(str(fp32)).graph.node)
        if precision == "int8":
            source, prep_note = quantize.preprocess(fp32, out / f"{job.stem}.pre.onnx")
            notes.append(prep_note)
            exclude, wide = quantize.outlier_nodes(source, job.calibration)
            if wide:
                notes.append(f"kept float (calibrated range > {quantize.RANGE_LIMIT:g}): {', '.join(exclude)}")
            for form in ("qdq", "qoperator"):
                variant = f"{form}-static-u8s8"
                path = out / f"{job.stem}.{variant}.onnx"
                try:
                    quantize.int8_static(source, path, job.calibration, form, exclude)
                except Exception as exc:  # one recipe failing must not sink the others
                    notes.append(f"{variant}: failed ({type(exc).__name__}: {str(exc)[:160]})")
                    continue
                config = {"tool": "onnxruntime quantize_static", "format": form, "per_channel": True,
                          "activations": "uint8", "weights": "int8", "calibration": "minmax",
                          "calibration_samples": len(next(iter(job.calibration.values()))), "excluded_nodes": exclude}
                candidates.append(_artifact(job, path, variant, config, notes))
        if has_matmul or precision == "dynamic-int8":
            path = out / f"{job.stem}.dynamic.onnx"
            try:
                quantize.int8_dynamic(fp32, path)
                config = {"tool": "onnxruntime quantize_dynamic", "per_channel": True, "weights": "int8"}
                candidates.append(_artifact(job, path, "dynamic", config, notes))
            except Exception as exc:
                notes.append(f"dynamic: failed ({type(exc).__name__}: {str(exc)[:160]})")
    elif precision == "int4":
        # Agreement on calibration data stands in for the accuracy budget (labels are for evaluation only).
        drop = job.profile.budgets.max_accuracy_drop
        target = 1.0 - drop if drop is not None else 0.99
        path, left, search = quantize.int4_weight_only(fp32, out / f"{job.stem}.int4.onnx", job.calibration, target)
        config = {"tool": "onnxruntime MatMulNBits + int4 DequantizeLinear (Conv)", "block_size": quantize.INT4_BLOCK,
                  "symmetric": True, "nodes_left_float": left, "mixed_precision": search}
        if search["kept_float_for_accuracy"]:
            notes.append(f"kept float for accuracy (most sensitive first): {', '.join(search['kept_float_for_accuracy'])}")
        candidates.append(_artifact(job, path, "int4-weight-only", config, notes))
    else:  # the config's Literal makes this unreachable; keep the error honest anyway
        raise InternalError(f"onnx backend got unknown precision {precision}")
    kept = [c for c in candidates if c is not None]
    if not kept:
        raise UnsupportedModelError(
            f"no {precision} onnx artifact could be made for target {job.profile.name}: {'; '.join(notes)}",
            "The model may have no layers this precision applies to; choose another precision for this target",
        )
    if precision != "fp32":
        _time_against_fp32(job, fp32, kept)
    return [Artifact(a.path, a.format, a.precision, a.variant, a.parent, a.config, {**a.details, "notes": notes}) for a in kept]
