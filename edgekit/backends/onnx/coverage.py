"""Quantization coverage of an .onnx candidate (``edgekit.coverage.Coverage``).

- Weights: elements by stored precision from ``census.node_weights``
  (GatherBlockQuantized, MatMulNBits, and GRU/Conv weights stored as int
  codes behind DequantizeLinear or a folded Cast -> Mul, counted at their
  stored width).
- Fast path: measured on the graph onnxruntime actually runs. The candidate
  is loaded with ``ORT_ENABLE_EXTENDED`` and the optimised model written out
  (``optimized_model_filepath``); there QDQ groups have become QLinearConv /
  QLinearMatMul, dynamic MatMuls DynamicQuantizeMatMul / MatMulIntegerToFloat.
  Compute ops are those carrying the model's arithmetic (``COMPUTE_FLOAT`` +
  ``COMPUTE_INTEGER`` + lookups of a constant table); fast ones are the
  integer / low-bit kernels (``COMPUTE_INTEGER``). EXTENDED, not ALL: ALL
  adds layout rewrites (NCHWc) that rename float convs without changing
  what is integer.
- Float ops: every node of the candidate still holding float weights, with
  why (the build's reasons first: kept for fidelity, outlier range; then
  bias/normalisation vectors, ops the recipe's tool does not quantize), and
  the PyTorch module it came from when the export recorded it.

Imports onnxruntime and onnx; no torch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import onnx

from edgekit.backends.onnx.census import NodeWeights, node_weights
from edgekit.coverage import Coverage, FloatOp

COMPUTE_FLOAT = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "GRU", "LSTM", "RNN", "FusedConv", "FusedMatMul", "FusedGemm",
    "Attention", "MultiHeadAttention", "Einsum",
})
COMPUTE_INTEGER = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
    "MatMulNBits", "GatherBlockQuantized", "DynamicQuantizeLSTM", "QGemm", "QAttention", "QLinearConvTranspose",
    "NhwcQLinearConv",
})
_INT_PRECISIONS = ("int8", "dynamic-int8", "int4")


def optimized_ops(path: Path) -> list[tuple[str, bool]]:
    """(op type, reads a constant table) for every node of the graph onnxruntime optimises ``path`` into."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgekit-opt-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(target))
    constants = {t.name for t in model.graph.initializer if len(t.dims) >= 2}
    return [(n.op_type, bool(n.input) and n.input[0] in constants) for n in model.graph.node]


def count_compute(ops: Iterable[tuple[str, bool]]) -> tuple[int, int]:
    """(compute ops, of which integer / low-bit) in an optimised graph's op list."""
    compute = fast = 0
    for op, reads_table in ops:
        if op in COMPUTE_INTEGER:
            compute += 1
            fast += 1
        elif op in COMPUTE_FLOAT or (op == "Gather" and reads_table):
            compute += 1
    return compute, fast


def reasons(explicit: Callable[[str], str | None], tool: str, supported: frozenset[str] | None = None,
            min_table: int | None = None) -> Callable[[NodeWeights], str]:
    """Why a node kept float weights, in this order: the build's own reason for it (``explicit(name)``:
    kept for fidelity, outlier range), a bias/normalisation vector, an embedding table below the size
    threshold, an op ``tool`` does not quantize (outside ``supported``), else "not quantized by ``tool``"."""

    def reason(row: NodeWeights) -> str:
        found = explicit(row.name)
        if found:
            return found
        if row.only_vectors:
            return "bias or normalisation vector (kept float by design)"
        if min_table is not None and row.op == "Gather" and row.floats() < min_table:
            return f"embedding table below the size threshold ({min_table} elements)"
        if supported is not None and row.op not in supported:
            return f"{tool} does not quantize {row.op}"
        return f"not quantized by {tool} (non-constant or unsupported weight layout)"

    return reason


def measure(
    path: Path,
    precision: str,
    reason_of: Callable[[NodeWeights], str],
    module_of: Callable[[str, str | None], str | None],
    fast_path: str = "",
    measure_fast: bool = True,
) -> Coverage:
    """The coverage record of the candidate at ``path``.

    ``reason_of`` says why a node still holds float weights (see ``reasons``);
    ``module_of(node name, first output)`` maps to PyTorch module paths.
    Fast-path counts are measured for integer precisions only (and only with
    ``measure_fast``).
    """
    model = onnx.load(str(path))
    rows = node_weights(model)
    by_precision: dict[str, int] = {}
    for row in rows:
        for prec, count in row.by_precision.items():
            by_precision[prec] = by_precision.get(prec, 0) + count
    float_ops = []
    wide = ("fp32", "fp64") if precision == "fp16" else ("fp32", "fp64", "fp16", "bf16")
    if precision != "fp32":
        for row in rows:
            elements = sum(n for p, n in row.by_precision.items() if p in wide)
            if elements:
                float_ops.append(FloatOp(row.name, row.op, elements, reason_of(row), module_of(row.name, row.first_output)))
    compute = fast = None
    if measure_fast and precision in _INT_PRECISIONS:
        compute, fast = count_compute(optimized_ops(path))
    return Coverage(precision, by_precision, compute, fast, fast_path, tuple(float_ops))
