"""Describe an .onnx file: I/O, op histogram, parameters, weight precisions. Needs ``onnx``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgekit.artifact import size_bytes
from edgekit.errors import ArtifactError, BackendUnavailableError

_ELEM = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "bool"}


def _value_info(value: Any) -> dict[str, Any]:
    tensor = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    return {"name": value.name, "shape": shape, "dtype": _ELEM.get(tensor.elem_type, str(tensor.elem_type))}


def inspect(path: Path) -> dict[str, Any]:
    """Facts about the model read from its bytes (nothing is executed)."""
    try:
        import onnx
    except ModuleNotFoundError:
        raise BackendUnavailableError(
            "inspecting .onnx files needs the 'onnx' package", 'Install it with: pip install "edgekit[onnx]"'
        ) from None
    from onnx.onnx_cpp2py_export.checker import ValidationError

    from edgekit.backends.onnx.census import float_weight_ops, weight_census

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except (ValidationError, onnx.onnx_cpp2py_export.shape_inference.InferenceError) as exc:
        raise ArtifactError(
            f"{path.name} is not a valid ONNX model: {str(exc).splitlines()[0]}",
            "Rebuild it with this edgekit, which runs onnx.checker on every ONNX file it ships; "
            "a file made elsewhere needs fixing by its maker",
        ) from None
    except Exception as exc:  # protobuf DecodeError and friends for non-ONNX bytes
        raise ArtifactError(f"{path.name} is not an ONNX model ({type(exc).__name__})", "Check the file") from None
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    census = weight_census(model)
    quantized = {p: n for p, n in census["by_precision"].items() if p in ("int8", "int4")}
    return {
        "format": "onnx",
        "path": str(path),
        "size_bytes": size_bytes(path),
        "inputs": [_value_info(v) for v in graph.input if v.name not in initializer_names],
        "outputs": [_value_info(v) for v in graph.output],
        "ops": dict(Counter(n.op_type for n in graph.node).most_common()),
        "parameters": census["parameters"],
        "weights": census,
        "quantized": bool(quantized),
        "details": {
            "opset": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "float_weights_by_op": float_weight_ops(census),
        },
    }
