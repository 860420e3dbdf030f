"""Weight census of an ONNX graph: how many weights, by consuming op, in each precision.

A "quantized" artifact is only honest if this census shows quantized weights;
the build refuses candidates in which nothing was quantized. Needs ``onnx``
only (no runtime, no torch).
"""

from __future__ import annotations

from collections import defaultdict
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

# Inputs that carry quantization parameters or shapes, not weights: (op_type, input index).
_PARAMETER_INPUTS = {
    ("DequantizeLinear", 1), ("DequantizeLinear", 2),
    ("QuantizeLinear", 1), ("QuantizeLinear", 2),
    ("MatMulNBits", 2), ("MatMulNBits", 3), ("MatMulNBits", 4),
    *((op, i) for op in ("QLinearConv", "QLinearMatMul") for i in (1, 2, 4, 5, 6, 7)),
    *((op, i) for op in ("QLinearAdd", "QLinearMul") for i in (1, 2, 4, 5, 6, 7)),
    *((op, i) for op in ("ConvInteger", "MatMulInteger") for i in (2, 3)),
    ("Reshape", 1), ("Expand", 1), ("Tile", 1), ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4),
    ("Unsqueeze", 1), ("Squeeze", 1), ("ReduceMean", 1), ("Pad", 1), ("Resize", 1), ("Resize", 2), ("Resize", 3),
    ("Split", 1), ("Range", 0), ("Range", 1), ("Range", 2), ("ConstantOfShape", 0),
}
# Ops that only pass a weight through on its way to the op that uses it.
_PASS_THROUGH = {"DequantizeLinear", "Cast", "Transpose", "Reshape", "Identity"}


def _numel(tensor: TensorProto) -> int:
    return int(np.prod(tensor.dims)) if tensor.dims else 1


def weight_census(model: onnx.ModelProto) -> dict[str, Any]:
    """Count weight elements by precision and by the op type that consumes them.

    Returns ``{"by_precision": {prec: n}, "by_op": {op: {prec: n}}, "parameters": n}``.
    Weights reaching an op through DequantizeLinear/Cast keep their stored
    precision (an int8 weight behind a DequantizeLinear counts as int8).
    MatMulNBits' packed weights count as ``int{bits}`` with K×N elements.
    """
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

    def final_op(name: str, depth: int = 0) -> str | None:
        """The first consumer that is not a pass-through op, or None for parameters."""
        uses = consumers.get(name, [])
        for node, index in uses:
            if (node.op_type, index) in _PARAMETER_INPUTS:
                continue
            if node.op_type in _PASS_THROUGH and depth < 4:
                found = final_op(node.output[0], depth + 1)
                if found:
                    return found
                continue
            return node.op_type
        return None

    by_op: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name, tensor in initializers.items():
        precision = _PRECISION.get(tensor.data_type)
        if precision is None or _numel(tensor) <= 1:
            continue
        op = final_op(name)
        if op is None:
            continue
        if op == "MatMulNBits":
            continue  # counted below from the node's attributes
        by_op[op][precision] += _numel(tensor)
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            by_op["MatMulNBits"][f"int{attrs.get('bits', 4)}"] += int(attrs["K"]) * int(attrs["N"])
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
