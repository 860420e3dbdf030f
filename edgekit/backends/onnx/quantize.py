"""ONNX FP16 and INT8 recipes with onnxruntime's own tools (INT4 lives in ``int4.py``).

| recipe | tool | weights | activations / compute |
|---|---|---|---|
| fp16 | ``convert_float_to_float16(keep_io_types=True)`` + topological sort | fp16 | fp16, fp32 I/O |
| static QDQ / QOperator | ``quantize_static`` (MinMax, one cached calibration) | int8 per channel | uint8, integer kernels |
| dynamic | ``quantize_dynamic`` on the folded graph, Gemm as MatMul, Conv left out (``dynamic_op_types``) | int8 per channel; convs folded int8 | uint8 at run time per batch for MatMul/LSTM; float convs |
| weight-only int8 | ``weights.py`` rewrites | int8 per channel (embeddings: GatherBlockQuantized) | float |
| (every int8) | ``store_leftovers`` | GRU/LSTM/RNN W and R, constant tables: int8 when still float | float |
| (kept float by a search) | ``weights_of_float_nodes`` | int8 storage, folded | float |

Static calibration runs once per job: its ranges are saved as onnxruntime's
calibration cache (``calibration_cache_path``), which the outlier check, both
formats and every round of the fallback search (``fallback.py``) read.

Each function reads a model file and writes a new file; none edits its
input. No torch here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.backends.onnx import graph as graphs
from edgekit.backends.onnx import weights
from edgekit.batching import pad_to

# A tensor whose calibrated range exceeds this cannot be int8-quantized
# usefully: one step would be ~80 units. The classic case is an attention
# mask added as a -1e9 bias; quantizing it would crush the real scores.
RANGE_LIMIT = 1e4
CALIBRATION_BATCH = 32
# Measured on the token-encoder fixture: u8s8 static 0.963 cosine, the same with 7-bit weights 0.9997.
REDUCE_RANGE_WHY = ("7-bit weights (reduce_range): uint8 x int8 products saturate the 16-bit sums of x86 "
                    "kernels without VNNI (onnxruntime's own advice for such CPUs); the file then behaves the same "
                    "on every CPU")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantizers log chatty warnings; edgekit reports its own findings."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        root.setLevel(level)


def batches(feeds: dict[str, np.ndarray], size: int, fixed_batch: int | None = None) -> list[dict[str, np.ndarray]]:
    """``feeds`` cut into batches of ``size`` samples, or of exactly ``fixed_batch`` (the last one padded)."""
    count = len(next(iter(feeds.values())))
    step = fixed_batch or size
    out = []
    for start in range(0, count, step):
        chunk = {k: v[start : start + step] for k, v in feeds.items()}
        out.append(pad_to(chunk, fixed_batch)[0] if fixed_batch else chunk)
    return out


class Reader:
    """onnxruntime CalibrationDataReader over the calibration split, in batches a fixed-batch model accepts.

    Padding repeats the chunk's last sample, which leaves MinMax ranges unchanged.
    """

    def __init__(self, calibration: dict[str, np.ndarray], fixed_batch: int | None = None,
                 batch: int = CALIBRATION_BATCH) -> None:
        self._batches = batches(calibration, batch, fixed_batch)
        self._position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self._batches):
            return None
        self._position += 1
        return self._batches[self._position - 1]

    def rewind(self) -> None:
        self._position = 0

    def __len__(self) -> int:
        return len(self._batches)


# ------------------------------------------------------------------------ FP16


def to_fp16(source: Path, destination: Path) -> Path:
    """FP16 weights and compute, FP32 inputs/outputs (so callers need no changes).

    The converter appends the Casts it adds for float32 inputs after the
    nodes that read them; the graph is sorted topologically again so the
    file passes ``onnx.checker`` (onnxruntime tolerated it, other tools do not).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet():
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    graphs.topological_sort(model.graph)
    onnx.save(model, str(destination))
    return destination


# ------------------------------------------------------------------------ INT8


def preprocess(source: Path, destination: Path) -> tuple[Path, str]:
    """onnxruntime's quantization pre-processing (shape inference + graph optimisation, constant folding).

    Its symbolic shape inference fails on some exports (the zoo MiniLM's
    Expand: "object of type 'NoneType' has no len()"); then it runs again
    with ONNX shape inference only. Returns the path to quantize from and a
    note; if both fail the original is used and the note says why, since
    pre-processing is an optimisation.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    problems = []
    for skip_symbolic in (False, True):
        try:
            with _quiet():
                quant_pre_process(str(source), str(destination), skip_symbolic_shape=skip_symbolic)
            how = " without symbolic shape inference" if skip_symbolic else ""
            return destination, f"pre-processed (shape inference, graph optimisation){how}"
        except Exception as exc:  # pre-processing is best effort
            problems.append(f"{type(exc).__name__}: {str(exc)[:120]}")
    return source, f"pre-processing skipped: {problems[-1]}"


def static_op_types() -> list[str]:
    """The op types ``quantize_static`` quantizes by default (both registries), as its calibration sees them."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def calibrate(source: Path, calibration: dict[str, np.ndarray], cache: Path, fixed_batch: int | None = None) -> Path:
    """Run MinMax calibration once and save the ranges as onnxruntime's calibration cache (JSON), sorted by name.

    ``quantize_static(calibration_cache_path=cache)`` then skips calibration,
    so both formats and every fallback round reuse these ranges.
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorsData,
        create_calibrator,
        save_tensors_data,
    )

    with tempfile.TemporaryDirectory(prefix="edgekit-calib-") as tmp, _quiet():
        calibrator = create_calibrator(str(source), static_op_types(), str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(Reader(calibration, fixed_batch))
        ranges = calibrator.compute_data()
        # onnxruntime collects tensor names in a set, so their order follows the process's string hash seed;
        # sorted, the cache (and everything quantized from it) is the same in every process.
        save_tensors_data(TensorsData(ranges.calibration_method, dict(sorted(ranges.data.items()))), cache)
        del calibrator
    return cache


def outlier_nodes(model_path: Path, cache: Path) -> tuple[list[str], list[str]]:
    """Nodes touching tensors whose calibrated range exceeds RANGE_LIMIT, and those tensors.

    Those nodes stay float in INT8 artifacts (e.g. the Add of a -1e9 attention
    mask bias and its Softmax), so the mask cannot wreck calibration ranges.
    """
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges = load_tensors_data(cache)
    wide = []
    for name, data in ranges.items():
        values = np.ravel(np.asarray(data.range_value, dtype=np.float64))
        if values.size and np.max(np.abs(values)) > RANGE_LIMIT:
            wide.append(name)
    model = onnx.load(str(model_path), load_external_data=False)
    touched = {n.name for n in model.graph.node if set(n.input) & set(wide) or set(n.output) & set(wide)}
    return sorted(touched), sorted(wide)


def int8_static(source: Path, destination: Path, quant_format: str, exclude: list[str], cache: Path,
                reduce_range: bool = False) -> Path:
    """Static INT8: per-channel int8 weights, uint8 activations, MinMax ranges from ``cache``.

    ``quant_format`` is "qdq" (QuantizeLinear/DequantizeLinear pairs, fused by
    onnxruntime) or "qoperator" (QLinearConv, QLinearMatMul, ...). Recurrent
    weights, which neither form quantizes, are stored int8 afterwards.
    ``reduce_range``: 7-bit weights (see ``REDUCE_RANGE_WHY``).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _quiet():
        quantize_static(
            str(source),
            str(destination),
            None,
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            calibration_cache_path=str(cache),
        )
    store_leftovers(destination)
    return destination


def dynamic_op_types() -> list[str]:
    """What the dynamic recipe hands to quantize_dynamic: its default op types except Conv.

    onnxruntime's ConvInteger (with a DynamicQuantizeLinear per conv) ran
    4.9x FP32 on a small CNN and 10.2x on the zoo's MobileNetV2, so convs
    get int8 *storage* instead (folded weight-only, FP32 speed) and integer
    compute stays where dynamic quantization is fast: MatMul, LSTM, lookups.
    """
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    return sorted(set(IntegerOpsRegistry) - {"Conv"})


def int8_dynamic(source: Path, destination: Path, exclude: list[str] = (),  # type: ignore[assignment]
                 reduce_range: bool = False) -> Path:
    """Dynamic INT8: int8 weights, activations quantized at run time per batch (MatMul, LSTM, lookups).

    ``source`` should be folded (``preprocess``): onnxruntime quantizes only
    weights that are initializers (LSTM weights built by Slice/Concat chains
    would stay float). Gemm is rewritten to MatMul first, since the dynamic
    quantizer has no Gemm form. Conv weights, GRU/RNN weights and constant
    tables are stored int8 afterwards (folded, float compute); nodes in
    ``exclude`` keep float weights.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model, _ = gemm_to_matmul(onnx.load(str(source)))
    with tempfile.TemporaryDirectory(prefix="edgekit-dyn-") as tmp, _quiet():
        staged = Path(tmp) / "staged.onnx"
        onnx.save(model, str(staged))
        # A Gemm kept out by name is the rewritten "<name>_MatMul" now.
        excluded = [*exclude, *(f"{name}_MatMul" for name in exclude)]
        quantize_dynamic(str(staged), str(destination), per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_exclude=excluded, reduce_range=reduce_range, op_types_to_quantize=dynamic_op_types())
    quantized = onnx.load(str(destination))
    kept = set(exclude)
    if weights.quantize_convs(quantized, 8, only=[n.name for n in quantized.graph.node if n.name not in kept]):
        onnx.save(quantized, str(destination))
    store_leftovers(destination)
    return destination


def int8_weight_only(source: Path, destination: Path, exclude: list[str] = ()) -> tuple[Path, list[str]]:  # type: ignore[assignment]
    """Weight-only INT8: every Conv/MatMul/Gemm/recurrent weight and embedding table int8, float compute.

    No calibration and no activation error: the fidelity of this recipe is
    the weights' alone (per-channel int8: ~40 dB), so it is the one that
    clears a bar static ranges miss. Returns the path and the nodes changed.
    """
    model, _ = graphs.fold_weight_chains(onnx.load(str(source)))
    keep = set(exclude)
    everything = [n.name for n in model.graph.node if n.name not in keep]
    changed = weights.quantize_matmuls(model, 8, only=everything)
    changed += weights.quantize_convs(model, 8, only=everything)
    changed += weights.quantize_recurrent(model, 8, only=everything)
    changed += weights.quantize_gathers(model, 8, block=weights.GATHER_BLOCK, only=everything)
    changed += weights.quantize_tables(model, 8)
    onnx.save(model, str(destination))
    return destination, changed


def store_leftovers(path: Path) -> list[str]:
    """Store the weights onnxruntime's int8 quantizers leave float in int8, in place; what changed.

    GRU/LSTM/RNN weights (no quantizer handles GRU; LSTM only dynamically)
    and constant tables read elementwise (sliced position embeddings), both
    folded at load, so compute is unchanged.
    """
    model = onnx.load(str(path))
    if any(n.op_type in graphs.RECURRENT for n in model.graph.node):
        model, _ = graphs.fold_weight_chains(model)
    changed = weights.quantize_recurrent(model, 8) + weights.quantize_tables(model, 8)
    if changed:
        onnx.save(model, str(path))
    return changed


def weights_of_float_nodes(path: Path, nodes: list[str]) -> list[str]:
    """Store the weights of ``nodes`` (kept float by a search) in int8, in place; compute stays float.

    A node kept out of static or dynamic quantization loses only its integer
    compute; its weights can still be stored int8 (folded, or
    GatherBlockQuantized for an embedding table), so a kept-float FFN layer
    or a 30k-token table does not double the file. Returns the nodes changed.
    """
    if not nodes:
        return []
    model = onnx.load(str(path))
    changed = weights.quantize_matmuls(model, 8, only=nodes) + weights.quantize_convs(model, 8, only=nodes)
    changed += weights.quantize_gathers(model, 8, block=weights.GATHER_BLOCK, only=nodes)
    if changed:
        onnx.save(model, str(path))
    return changed


def gemm_to_matmul(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Rewrite ``Gemm(A, B, C)`` with constant B as ``MatMul(A, B') + C``.

    onnxruntime's MatMulNBits and dynamic quantizers only handle MatMul and
    silently skip Gemm. Returns the model and the names of Gemm nodes that
    could not be rewritten (transA, alpha/beta != 1, or a non-constant B),
    which stay float.
    """
    inits = graphs.initializers(model)
    kept: list[str] = []
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != "Gemm":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = inits.get(node.input[1])
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
    graphs.drop_unused_initializers(model)
    return model, kept
