"""ONNX precisions with onnxruntime's own tools: FP16, INT8 (static, dynamic) and INT4.

Each function reads an FP32 model file and writes a new file; none edits its
input. No torch here.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

# A tensor whose calibrated range exceeds this cannot be int8-quantized
# usefully: one step would be ~80 units. The classic case is an attention
# mask added as a -1e9 bias; quantizing it would crush the real scores.
RANGE_LIMIT = 1e4
INT4_BLOCK = 32


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantizers log chatty warnings; edgekit reports its own findings."""
    logging.getLogger().setLevel(logging.ERROR)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


class _Reader:
    """CalibrationDataReader over the calibration split, in batches."""

    def __init__(self, calibration: dict[str, np.ndarray], batch: int = 32) -> None:
        count = len(next(iter(calibration.values())))
        self._batches = [{k: v[i : i + batch] for k, v in calibration.items()} for i in range(0, count, batch)]
        self._position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self._batches):
            return None
        self._position += 1
        return self._batches[self._position - 1]

    def rewind(self) -> None:
        self._position = 0


def to_fp16(source: Path, destination: Path) -> Path:
    """FP16 weights and compute, FP32 inputs/outputs (so callers need no changes)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet():
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(destination))
    return destination


def preprocess(source: Path, destination: Path) -> tuple[Path, str]:
    """onnxruntime's quantization pre-processing (shape inference + graph optimisation).

    Returns the path to quantize from and a note; on failure the original is
    used and the note says why, since pre-processing is an optimisation.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet():
            quant_pre_process(str(source), str(destination))
        return destination, "pre-processed (shape inference, graph optimisation)"
    except Exception as exc:  # pre-processing is best effort
        return source, f"pre-processing skipped: {type(exc).__name__}: {str(exc)[:120]}"


def outlier_nodes(model_path: Path, calibration: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """Nodes touching tensors whose calibrated range exceeds RANGE_LIMIT, and those tensors.

    Those nodes stay float in INT8 artifacts (e.g. the Add of a -1e9 attention
    mask bias and its Softmax), so the mask cannot wreck calibration ranges.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        calibrator = create_calibrator(
            str(model_path), None, str(Path(tmp) / "augmented.onnx"), calibrate_method=CalibrationMethod.MinMax
        )
        calibrator.collect_data(_Reader(calibration))
        ranges = calibrator.compute_data()
    wide = []
    for name in ranges.data:
        low, high = (float(v) for v in np.ravel(ranges.data[name].range_value)[:2])
        if max(abs(low), abs(high)) > RANGE_LIMIT:
            wide.append(name)
    model = onnx.load(str(model_path))
    touched = {n.name for n in model.graph.node if set(n.input) & set(wide) or set(n.output) & set(wide)}
    return sorted(touched), sorted(wide)


def int8_static(
    source: Path,
    destination: Path,
    calibration: dict[str, np.ndarray],
    quant_format: str,
    exclude: list[str],
) -> Path:
    """Static INT8: per-channel int8 weights, uint8 activations, MinMax calibration.

    ``quant_format`` is "qdq" (QuantizeLinear/DequantizeLinear pairs, fused by
    onnxruntime) or "qoperator" (QLinearConv, QLinearMatMul, ...).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _quiet():
        quantize_static(
            str(source),
            str(destination),
            _Reader(calibration),
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    return destination


def int8_dynamic(source: Path, destination: Path) -> Path:
    """Dynamic INT8: int8 weights, activations quantized at run time per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(source), str(destination), per_channel=True, weight_type=QuantType.QInt8)
    return destination


# ------------------------------------------------------------------------ INT4


def gemm_to_matmul(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Rewrite ``Gemm(A, B, C)`` with constant B as ``MatMul(A, B') + C``.

    onnxruntime's MatMulNBits quantizer only handles MatMul and silently skips
    Gemm. Returns the model and the names of Gemm nodes that could not be
    rewritten (transA, alpha/beta != 1, or a non-constant B), which stay float.
    """
    initializers = {t.name: t for t in model.graph.initializer}
    kept: list[str] = []
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != "Gemm":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = initializers.get(node.input[1])
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or weight is None:
            kept.append(node.name)
            nodes.append(node)
            continue
        matrix = numpy_helper.to_array(weight)
        if attrs.get("transB", 0):
            matrix = matrix.T
        new_name = f"{node.input[1]}_kn"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(matrix), new_name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], new_name], [product], name=f"{node.name}_MatMul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_Add"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for n in model.graph.node for name in n.input}
    kept_inits = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_inits)
    return model, kept


def conv_weights_to_int4(model: onnx.ModelProto, keep: frozenset[str] = frozenset()) -> tuple[onnx.ModelProto, list[str]]:
    """Store Conv weights as symmetric per-output-channel int4 behind a DequantizeLinear.

    The weight-only form onnxruntime has for Conv: the file shrinks to ~1/8 of
    FP32 for those weights; compute stays float. Conv nodes named in ``keep``
    stay float on purpose. Returns the names of Conv nodes left float.
    """
    initializers = {t.name: t for t in model.graph.initializer}
    left: list[str] = []
    nodes: list[onnx.NodeProto] = []
    replaced: set[str] = set()
    for node in model.graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if node.op_type == "Conv" and node.name in keep:
            weight = None
        if node.op_type == "Conv" and (weight is None or weight.data_type != onnx.TensorProto.FLOAT):
            left.append(node.name)
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT or node.op_type != "Conv":
            nodes.append(node)
            continue
        values = numpy_helper.to_array(weight)
        scale = np.abs(values.reshape(values.shape[0], -1)).max(axis=1) / 7.0
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        shape = (-1,) + (1,) * (values.ndim - 1)
        q = np.clip(np.round(values / scale.reshape(shape)), -8, 7).astype(np.int8)
        base = node.input[1]
        q_tensor = helper.make_tensor(f"{base}_int4", onnx.TensorProto.INT4, q.shape, q.flatten().tolist())
        model.graph.initializer.extend([q_tensor, numpy_helper.from_array(scale, f"{base}_scale")])
        dq_out = f"{base}_dequantized"
        nodes.append(
            helper.make_node(
                "DequantizeLinear", [q_tensor.name, f"{base}_scale"], [dq_out], name=f"{node.name}_weight_dq", axis=0
            )
        )
        node.input[1] = dq_out
        replaced.add(base)
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    still_used = {name for n in model.graph.node for name in n.input}
    kept_inits = [t for t in model.graph.initializer if t.name not in replaced or t.name in still_used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_inits)
    return model, left


def _agreement(session: object, reference: list[np.ndarray], calibration: dict[str, np.ndarray]) -> float:
    """Top-1 agreement with the FP32 outputs (cosine similarity for single-score outputs)."""
    out = session.run(None, calibration)[0].reshape(len(reference[0]), -1)  # type: ignore[attr-defined]
    ref = reference[0].reshape(len(reference[0]), -1)
    if ref.shape[1] > 1:
        return float(np.mean(out.argmax(1) == ref.argmax(1)))
    denom = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    return float(np.mean((out * ref).sum(1) / np.maximum(denom, 1e-30)))


def _conv_weight_sizes(model: onnx.ModelProto) -> dict[str, int]:
    dims = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    return {n.name: dims.get(n.input[1], 1) for n in model.graph.node if n.op_type == "Conv"}


def _session(model: onnx.ModelProto) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def int4_weight_only(
    source: Path,
    destination: Path,
    calibration: dict[str, np.ndarray] | None = None,
    min_agreement: float = 0.99,
    block_size: int = INT4_BLOCK,
) -> tuple[Path, list[str], dict[str, object]]:
    """INT4 weights for MatMul/Gemm (MatMulNBits, block-wise) and Conv (int4 DequantizeLinear).

    Mixed precision where needed: when the all-int4 model agrees with FP32 on
    fewer than ``min_agreement`` of the calibration samples, each Conv's
    sensitivity is measured (quantizing that Conv alone, output error on the
    calibration data) and Convs stay float one at a time, highest error per
    weight first, until agreement is reached. Returns the path, the weight-bearing nodes left
    float, and a record of the sensitivity search.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model, gemm_left = gemm_to_matmul(onnx.load(str(source)))
    with _quiet():
        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True)
        quantizer.process()
        model = quantizer.model.model
    record: dict[str, object] = {"min_agreement": min_agreement, "kept_float_for_accuracy": []}
    keep: list[str] = []
    if calibration is not None:
        reference = _session(onnx.load(str(source))).run(None, calibration)  # type: ignore[attr-defined]
        full, _ = conv_weights_to_int4(copy.deepcopy(model))
        agreement = _agreement(_session(full), reference, calibration)
        record["agreement_all_int4"] = agreement
        convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
        if agreement < min_agreement and convs:
            ref0 = reference[0].reshape(len(reference[0]), -1)
            sensitivity = {}
            for name in convs:  # quantize this Conv alone; the output error it causes is its sensitivity
                alone, _ = conv_weights_to_int4(copy.deepcopy(model), frozenset(convs) - {name})
                out = _session(alone).run(None, calibration)[0].reshape(ref0.shape)  # type: ignore[attr-defined]
                sensitivity[name] = float(np.sum((out - ref0) ** 2) / max(np.sum(ref0**2), 1e-30))
            # Rank by error per weight kept float: small sensitive layers (stems,
            # depthwise convs) buy the most accuracy for the fewest bytes.
            sizes = _conv_weight_sizes(model)
            for name in sorted(convs, key=lambda n: sensitivity[n] / max(sizes.get(n, 1), 1), reverse=True):
                keep.append(name)
                trial, _ = conv_weights_to_int4(copy.deepcopy(model), frozenset(keep))
                agreement = _agreement(_session(trial), reference, calibration)
                if agreement >= min_agreement:
                    break
            record.update(kept_float_for_accuracy=keep, agreement=agreement,
                          sensitivity={k: round(v, 8) for k, v in sensitivity.items()})
        else:
            record["agreement"] = agreement
    model, conv_left = conv_weights_to_int4(model, frozenset(keep))
    onnx.save(model, str(destination))
    return destination, gemm_left + conv_left, record
