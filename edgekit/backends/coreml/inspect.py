"""Describe an ``.mlpackage`` from its bytes: I/O, op histogram, parameters, weight census.

Needs only what the runtime needs (numpy, protobuf, the Core ML proto files);
nothing is executed and coremltools is not imported.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgekit.artifact import size_bytes
from edgekit.backends.coreml import census
from edgekit.backends.coreml.emulator.program import load_package
from edgekit.backends.coreml.runtime import tensor_spec


def inspect(path: Path) -> dict[str, Any]:
    """Facts about the package (format, I/O, ops, parameters, weights, quantized, details)."""
    path = Path(path)
    package = load_package(path)
    weights = census.weight_census(package)
    operations = [op.type for op in package.main.operations if op.type != "const"]
    compressed = {k: v for k, v in weights["by_precision"].items() if k not in census.FLOAT_LABELS}
    float_ops = {}
    for weight in census.float_weights(package):
        float_ops[weight["op"]] = float_ops.get(weight["op"], 0) + weight["elements"]
    return {
        "format": "coreml",
        "path": str(path),
        "size_bytes": size_bytes(path),
        "inputs": [tensor_spec(f).as_dict() for f in package.inputs],
        "outputs": [tensor_spec(f, package).as_dict() for f in package.outputs],
        "ops": dict(Counter(operations).most_common()),
        "parameters": weights["parameters"],
        "weights": weights,
        "quantized": bool(compressed),
        "details": {
            "deployment_target": package.deployment_target,
            "specification_version": package.spec_version,
            "opset": package.main.opset,
            "compute_precision": _compute_precision(package),
            "constexpr_ops": census.constexpr_ops(package),
            "float_weights_by_op": float_ops if compressed else {},
            "functions": sorted(package.functions),
            "source": package.metadata.get("com.github.apple.coremltools.source", ""),
            "converter": "coremltools " + package.metadata.get("com.github.apple.coremltools.version", "?"),
        },
    }


def _compute_precision(package: Any) -> str:
    """fp16 when any compute op produces fp16 values, else fp32 (read from declared output types)."""
    for op in package.main.operations:
        if op.type in ("const", "cast") or op.type.startswith("constexpr_"):
            continue
        if any(t.dtype == "fp16" for _, t in op.outputs):
            return "fp16"
    return "fp32"
