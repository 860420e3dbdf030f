"""Weight census of an ONNX graph: how many weights, by consuming node and op, in each precision.

A "quantized" artifact is only honest if this census shows quantized weights;
the build refuses candidates in which nothing was quantized, and coverage
(``edgekit.coverage``) is computed from it. Needs ``onnx`` only (no runtime,
no torch).

What counts where:

- a weight reaching its op through DequantizeLinear / Cast / Transpose /
  Reshape, or the folded Cast -> Mul(scale) form of ``weights.py``, keeps its
  *stored* precision (an int8 GRU weight counts as int8 for the GRU);
- packed forms count logical elements: ``MatMulNBits`` K x N at ``bits``,
  ``GatherBlockQuantized`` rows x columns at ``bits`` (uint8 storage with
  bits=4 holds two per byte);
- scales, zero points and shape operands are parameters, not weights (see
  ``_PARAMETER_INPUTS``); so are scalars.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

_PRECISION = {
    TensorProto.FLOAT: "fp32",
    TensorProto.FLOAT16: "fp16",
    TensorProto.BFLOAT16: "bf16",
    TensorProto.DOUBLE: "fp64",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "int8",
    TensorProto.INT4: "int4",
    TensorProto.UINT4: "int4",
    TensorProto.INT32: "int32",
}

_QLINEAR_BINARY = ("QLinearAdd", "QLinearMul")
# Inputs that carry quantization parameters or shapes, not weights: (op_type, input index).
_PARAMETER_INPUTS = {
    ("DequantizeLinear", 1), ("DequantizeLinear", 2),
    ("QuantizeLinear", 1), ("QuantizeLinear", 2),
    ("MatMulNBits", 2), ("MatMulNBits", 3), ("MatMulNBits", 4),
    ("GatherBlockQuantized", 2), ("GatherBlockQuantized", 3),
    *((op, i) for op in ("QLinearConv", "QLinearMatMul") for i in (1, 2, 4, 5, 6, 7)),
    *((op, i) for op in _QLINEAR_BINARY for i in (1, 2, 4, 5, 6, 7)),
    *(("QGemm", i) for i in (1, 2, 4, 5, 7, 8)),
    *((op, i) for op in ("ConvInteger", "MatMulInteger") for i in (2, 3)),
    ("DynamicQuantizeMatMul", 2), ("DynamicQuantizeMatMul", 3),
    *(("MatMulIntegerToFloat", i) for i in (2, 3, 4, 5)),
    *(("DynamicQuantizeLSTM", i) for i in (8, 9, 10, 11)),
    ("Reshape", 1), ("Expand", 1), ("Tile", 1), ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4),
    ("Unsqueeze", 1), ("Squeeze", 1), ("ReduceMean", 1), ("ReduceSum", 1), ("Pad", 1), ("Resize", 1),
    ("Resize", 2), ("Resize", 3), ("Split", 1), ("Range", 0), ("Range", 1), ("Range", 2), ("ConstantOfShape", 0),
    ("Clip", 1), ("Clip", 2),
}
# Ops that only pass a weight through on its way to the op that uses it.
_PASS_THROUGH = {"DequantizeLinear", "Cast", "Transpose", "Reshape", "Identity"}
_INTEGER = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4}


def _dequantizing_muls(graph: onnx.GraphProto, initializers: dict[str, TensorProto]) -> set[str]:
    """Mul nodes that scale integer codes (an integer initializer through Cast/Reshape) by a constant.

    The folded weight-only form (``weights._replace_with_dq``): the Mul passes
    the weight through, and its constant input is a scale, not a weight.
    """
    derived = {name for name, t in initializers.items() if t.data_type in _INTEGER}
    found = set()
    for node in graph.node:
        if node.op_type in ("Cast", "Reshape", "Transpose", "Identity") and node.input and node.input[0] in derived:
            derived.update(node.output)
        elif node.op_type == "Mul" and len(node.input) == 2 and any(i in derived for i in node.input) \
                and any(i in initializers and i not in derived for i in node.input):
            found.add(node.name or node.output[0])
            derived.update(node.output)
    return found


def _numel(tensor: TensorProto) -> int:
    return int(np.prod(tensor.dims)) if tensor.dims else 1


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class NodeWeights:
    """The weight elements one node consumes, by stored precision."""

    name: str
    op: str
    first_output: str
    by_precision: dict[str, int] = field(default_factory=dict)
    # Whether every float weight it holds is 1-D (a bias or a normalisation scale): float by design.
    only_vectors: bool = True

    def floats(self) -> int:
        return sum(n for p, n in self.by_precision.items() if p.startswith(("fp", "bf")))


def node_weights(model: onnx.ModelProto) -> list[NodeWeights]:
    """Per consuming node: weight elements by stored precision (see the module docstring)."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    for node in graph.node:  # Constant nodes are weights too
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    initializers[node.output[0]] = attr.t
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers[name].append((node, index))
    scaling = _dequantizing_muls(graph, initializers)

    def final_node(name: str, depth: int = 0) -> onnx.NodeProto | None:
        """The first consumer that is not a pass-through op, or None for parameters."""
        for node, index in consumers.get(name, []):
            if (node.op_type, index) in _PARAMETER_INPUTS:
                continue
            if (node.name or node.output[0]) in scaling:
                if initializers.get(name) is not None and initializers[name].data_type not in _INTEGER:
                    continue  # the scale
                found = final_node(node.output[0], depth + 1) if depth < 6 else None
                if found is not None:
                    return found
                continue
            if node.op_type in _PASS_THROUGH and depth < 6:
                found = final_node(node.output[0], depth + 1)
                if found is not None:
                    return found
                continue
            return node
        return None

    rows: dict[str, NodeWeights] = {}

    def row(node: onnx.NodeProto) -> NodeWeights:
        key = node.name or node.output[0]
        if key not in rows:
            rows[key] = NodeWeights(key, node.op_type, node.output[0] if node.output else "")
        return rows[key]

    for name, tensor in initializers.items():
        precision = _PRECISION.get(tensor.data_type)
        if precision is None or _numel(tensor) <= 1:
            continue
        node = final_node(name)
        if node is None:
            continue
        target = row(node)
        count = _numel(tensor)
        if node.op_type == "MatMulNBits" and tensor.name == node.input[1]:
            attrs = _attrs(node)
            precision, count = f"int{attrs.get('bits', 4)}", int(attrs["K"]) * int(attrs["N"])
        elif node.op_type == "GatherBlockQuantized" and tensor.name == node.input[0]:
            bits = int(_attrs(node).get("bits", 4))
            precision = f"int{bits}"
            if bits == 4 and tensor.data_type == TensorProto.UINT8:
                count *= 2  # two values per byte
        target.by_precision[precision] = target.by_precision.get(precision, 0) + count
        if precision.startswith(("fp", "bf")) and len([d for d in tensor.dims if d > 1]) > 1:
            target.only_vectors = False
    return list(rows.values())


def weight_census(model: onnx.ModelProto) -> dict[str, Any]:
    """Count weight elements by precision and by the op type that consumes them.

    Returns ``{"by_precision": {prec: n}, "by_op": {op: {prec: n}}, "parameters": n}``.
    """
    by_op: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entry in node_weights(model):
        for precision, count in entry.by_precision.items():
            by_op[entry.op][precision] += count
    by_precision: dict[str, int] = defaultdict(int)
    for counts in by_op.values():
        for precision, count in counts.items():
            by_precision[precision] += count
    return {
        "by_precision": dict(sorted(by_precision.items())),
        "by_op": {op: dict(sorted(c.items())) for op, c in sorted(by_op.items())},
        "parameters": sum(by_precision.values()),
    }


def float_weight_ops(census: dict[str, Any]) -> dict[str, int]:
    """Ops that still hold float (fp32/fp16) weights, with how many elements: what stayed unquantized."""
    stayed = {}
    for op, counts in census["by_op"].items():
        floats = counts.get("fp32", 0) + counts.get("fp16", 0)
        if floats:
            stayed[op] = floats
    return stayed
