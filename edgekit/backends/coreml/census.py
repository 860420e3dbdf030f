"""Weight census of a saved ML Program: how many weights, in which stored form, used by which op.

Read from the package's own program (``emulator.program``), not from
coremltools objects, so ``inspect`` and the build report the same numbers.

A weight is a float constant with more than one element that feeds a
compute op, either directly (``const``) or through a chain of
``constexpr_*`` decompression ops. Its label is the form it is *stored* in:

- ``fp32`` / ``fp16``: plain constants;
- ``int8`` / ``int4``: linear quantization (affine or blockwise shift-scale,
  signed or unsigned storage);
- ``lut1`` .. ``lut8``: palettized (look-up table with n-bit indices);
- ``sparse-<inner>``: pruned, with ``<inner>`` the form of the non-zero values.

Counts are dense element counts, so ``parameters`` is comparable across forms.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from edgekit.backends.coreml.emulator.program import Argument, Function, Operation, Package

FLOAT_LABELS = frozenset({"fp32", "fp16"})
_BITS = {"int8": 8, "uint8": 8, "int4": 4, "uint4": 4, "uint1": 1, "uint2": 2, "uint3": 3, "uint6": 6}


class _Graph:
    """Producers of every named value and the declared dtypes of op inputs."""

    def __init__(self, function: Function) -> None:
        self.producer: dict[str, tuple[Operation, int]] = {}
        for op in function.operations:
            for index, (name, _) in enumerate(op.outputs):
                self.producer[name] = (op, index)

    def dtype_of(self, op: Operation, param: str) -> str | None:
        """MIL dtype of an op's input (or iOS 16 attribute)."""
        if param in op.inputs:
            arg = op.inputs[param][0]
            if arg.name is not None and arg.name in self.producer:
                source, index = self.producer[arg.name]
                return source.outputs[index][1].dtype
            return arg.dtype
        if param in op.attributes:
            return op.attribute_types.get(param)
        return None

    def label(self, name: str, depth: int = 0) -> str | None:
        """Stored form of the weight named ``name``; None when it is not a constant."""
        found = self.producer.get(name)
        if found is None or depth > 4:
            return None
        op, index = found
        kind = op.type
        if kind == "const":
            return {"fp32": "fp32", "fp16": "fp16"}.get(op.outputs[index][1].dtype)
        if kind == "constexpr_cast":
            return self.dtype_of(op, "source_val")
        if kind == "constexpr_affine_dequantize":
            return _int_label(self.dtype_of(op, "quantized_data"))
        if kind == "constexpr_blockwise_shift_scale":
            return _int_label(self.dtype_of(op, "data"))
        if kind == "constexpr_sparse_blockwise_shift_scale":
            return f"sparse-{_int_label(self.dtype_of(op, 'nonzero_data'))}"
        if kind == "constexpr_lut_to_dense":
            return f"lut{_lut_bits(self, op)}"
        if kind == "constexpr_lut_to_sparse":
            bits = _BITS.get(self.dtype_of(op, "indices_nonzero_data") or "", 8)
            return f"sparse-lut{bits}"
        if kind == "constexpr_sparse_to_dense":
            inner = _argument_name(op, "nonzero_data")
            inner_label = self.label(inner, depth + 1) if inner else None
            if inner_label is None or inner_label in FLOAT_LABELS:
                inner_label = inner_label or self.dtype_of(op, "nonzero_data")
                return f"sparse-{inner_label}"
            return inner_label if inner_label.startswith("sparse-") else f"sparse-{inner_label}"
        return None


def _argument_name(op: Operation, param: str) -> str | None:
    args: tuple[Argument, ...] = op.inputs.get(param, ())
    return args[0].name if args else None


def _int_label(dtype: str | None) -> str:
    return f"int{_BITS.get(dtype or '', 8)}" if dtype not in ("fp16", "fp32") else str(dtype)


def _lut_bits(graph: _Graph, op: Operation) -> int:
    if "shape" in op.attributes or "shape" in op.inputs:  # iOS 16: the table size gives the bits
        lut = op.attributes.get("lut")
        size = lut.size if isinstance(lut, np.ndarray) else 256
        return int(np.log2(size))
    return _BITS.get(graph.dtype_of(op, "indices") or "", 8)


def _is_weight_consumer(op: Operation) -> bool:
    return op.type != "const" and not op.type.startswith("constexpr_")


def _elements(shape: tuple[int | None, ...] | None) -> int:
    if shape is None or any(d is None for d in shape):
        return 0
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def weights(package: Package) -> list[dict[str, Any]]:
    """Every weight tensor: name, consuming op type and name, stored form, dense element count."""
    function = package.main
    graph = _Graph(function)
    seen: set[str] = set()
    found = []
    for op in function.operations:
        if not _is_weight_consumer(op):
            continue
        for param, args in op.inputs.items():
            for arg in args:
                name = arg.name
                if name is None or name in seen or name not in graph.producer:
                    continue
                source, index = graph.producer[name]
                if source.type != "const" and not source.type.startswith("constexpr_"):
                    continue
                declared = source.outputs[index][1]
                if declared.dtype not in FLOAT_LABELS or _elements(declared.shape) <= 1:
                    continue  # shapes, axes, scalars: parameters of the op, not weights
                label = graph.label(name)
                if label is None:
                    continue
                seen.add(name)
                found.append({"name": name, "op": op.type, "op_name": op.name, "input": param,
                              "precision": label, "elements": _elements(declared.shape),
                              "shape": list(declared.shape or ())})
    return found


def weight_census(package: Package) -> dict[str, Any]:
    """``{"by_precision": {form: n}, "by_op": {op: {form: n}}, "parameters": n}`` (dense element counts)."""
    by_op: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for weight in weights(package):
        by_op[weight["op"]][weight["precision"]] += weight["elements"]
    by_precision: dict[str, int] = defaultdict(int)
    for counts in by_op.values():
        for label, count in counts.items():
            by_precision[label] += count
    return {
        "by_precision": dict(sorted(by_precision.items())),
        "by_op": {op: dict(sorted(c.items())) for op, c in sorted(by_op.items())},
        "parameters": sum(by_precision.values()),
    }


def float_weights(package: Package) -> list[dict[str, Any]]:
    """Weights still stored as plain fp32/fp16: what compression left alone (and how big each is)."""
    return [
        {k: w[k] for k in ("name", "op", "op_name", "input", "precision", "elements")}
        for w in weights(package)
        if w["precision"] in FLOAT_LABELS
    ]


def constexpr_ops(package: Package) -> dict[str, int]:
    """Histogram of the decompression ops in the program."""
    counts: dict[str, int] = defaultdict(int)
    for op in package.main.operations:
        if op.type.startswith("constexpr_"):
            counts[op.type] += 1
    return dict(sorted(counts.items()))


def _plain_float_constants(package: Package) -> dict[str, np.ndarray]:
    found = {}
    for op in package.main.operations:
        if op.type == "const":
            value = op.attributes.get("val")
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size > 1:
                found[op.outputs[0][0]] = value
    return found


def changed_float_weights(source: Package, compressed: Package) -> list[str]:
    """Plain float constants present in both programs whose values differ.

    Compression must either replace a weight with a constexpr op or leave it
    bit-identical; a changed plain constant is a corrupted weight.
    """
    before = _plain_float_constants(source)
    after = _plain_float_constants(compressed)
    return sorted(name for name, value in after.items()
                  if name in before and (before[name].shape != value.shape or not np.array_equal(before[name], value)))
