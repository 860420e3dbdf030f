"""Read a .tflite flatbuffer without running it.

``inspect(path)`` reports the interface, op histogram and weight precision
census of a TFLite model. It parses the flatbuffer with the schema module that
ships inside ai-edge-litert (``ai_edge_litert.schema_py_generated``), so it
needs neither torch nor a converter, and a malformed file can only raise a
Python exception (turned into ArtifactError), never crash the process.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import ArtifactError

try:  # the schema reader ships with the runtime; tflite_runtime has none
    from ai_edge_litert import schema_py_generated as schema
except ImportError:  # pragma: no cover - exercised only on runtime-only devices without ai-edge-litert
    schema = None  # type: ignore[assignment]

# TensorType enum value -> census key. Float types use the "fp" spelling of
# edgekit's precisions; everything else is the numpy-style name.
_TYPE_NAMES: dict[int, str] = {
    0: "fp32", 1: "fp16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "fp64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bf16",
    19: "int2", 20: "uint4", 21: "fp8_e4m3", 22: "fp8_e5m2",
}
# The same enum -> numpy dtype names for the I/O description.
_NUMPY_NAMES: dict[int, str] = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "object", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
}
FLOAT_KEYS = frozenset({"fp32", "fp16", "bf16", "fp64"})
# Types a constant may have and still be a learned parameter (int32 only as a bias, below).
_PARAM_KEYS = FLOAT_KEYS | {"int8", "int4", "int2", "uint8", "uint4", "int16", "fp8_e4m3", "fp8_e5m2"}
# Ops whose input 1 is "the weight" of a layer, and the index of their int32 bias.
WEIGHT_OPS: dict[str, int | None] = {
    "CONV_2D": 2,
    "DEPTHWISE_CONV_2D": 2,
    "FULLY_CONNECTED": 2,
    "TRANSPOSE_CONV": 3,
    "CONV_3D": 2,
    "EMBEDDING_LOOKUP": None,
    "BATCH_MATMUL": None,
}


def _op_names() -> dict[int, str]:
    if schema is None:
        return {}
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if isinstance(v, int) and not k.startswith("_")}


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class ParsedModel:
    """A parsed flatbuffer: the schema object tree plus derived lookups for subgraph 0."""

    model: Any
    op_names: list[str]  # op name per operator of subgraph 0, in execution order


def parse(data: bytes, name: str = "model") -> ParsedModel:
    """Parse .tflite bytes; raise ArtifactError if they are not a TFLite flatbuffer."""
    if schema is None:
        raise ArtifactError(
            "cannot read .tflite files: the ai-edge-litert package (which ships the TFLite schema) is not installed",
            'Install it with: pip install "edgekit[runtime]"',
        )
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ArtifactError(
            f"{name} is not a TFLite model (no 'TFL3' flatbuffer identifier)",
            "Check the file is a complete .tflite model (rebuild it if it was truncated)",
        )
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        if not model.subgraphs:
            raise ValueError("the model has no subgraphs")
        codes = _op_names()
        names = []
        graph = model.subgraphs[0]
        for op in graph.operators or []:
            opcode = model.operatorCodes[op.opcodeIndex]
            code = max(opcode.builtinCode, opcode.deprecatedBuiltinCode)
            if code == getattr(schema.BuiltinOperator, "CUSTOM", 32):
                names.append(f"CUSTOM:{_text(opcode.customCode)}")
            else:
                names.append(codes.get(code, f"BUILTIN_{code}"))
    except ArtifactError:
        raise
    except Exception as exc:  # a damaged flatbuffer surfaces as any of IndexError, struct.error, ...
        raise ArtifactError(
            f"{name} is not a readable TFLite model ({type(exc).__name__}: {exc})",
            "Check the file is a complete .tflite model (rebuild it if it was truncated)",
        ) from None
    return ParsedModel(model, names)


def min_runtime_version(parsed: ParsedModel) -> str | None:
    """The ``min_runtime_version`` the converter wrote into the flatbuffer's metadata, or None."""
    model = parsed.model
    for entry in model.metadata or []:
        if _text(entry.name) == "min_runtime_version" and 0 <= entry.buffer < len(model.buffers or []):
            data = model.buffers[entry.buffer].data
            text = bytes(data if data is not None else b"").split(b"\0", 1)[0].decode("ascii", "replace").strip()
            return text or None
    return None


def _is_constant(model: Any, tensor: Any) -> bool:
    if not tensor.buffer or tensor.buffer >= len(model.buffers or []):
        return False
    buffer = model.buffers[tensor.buffer]
    has_inline = buffer.data is not None and len(buffer.data) > 0
    return has_inline or (buffer.offset or 0) > 1


def _elements(tensor: Any) -> int:
    count = 1
    for dim in tensor.shape if tensor.shape is not None else []:
        count *= max(int(dim), 0)
    return count


def _quantization(tensor: Any) -> dict[str, Any] | None:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    scales = [float(s) for s in q.scale]
    zeros = [int(z) for z in (q.zeroPoint if q.zeroPoint is not None else [0] * len(scales))]
    if len(scales) == 1:
        return {"scale": scales[0], "zero_point": zeros[0] if zeros else 0}
    return {"scale": scales, "zero_point": zeros, "axis": int(q.quantizedDimension)}


def _signature_names(model: Any) -> tuple[dict[int, str], dict[int, str]]:
    """Tensor index -> signature name for the inputs and outputs of subgraph 0."""
    inputs: dict[int, str] = {}
    outputs: dict[int, str] = {}
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex != 0:
            continue
        for entry in sig.inputs or []:
            inputs[entry.tensorIndex] = _text(entry.name)
        for entry in sig.outputs or []:
            outputs[entry.tensorIndex] = _text(entry.name)
        break
    return inputs, outputs


def io_description(parsed: ParsedModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of subgraph 0 in graph order, named after the signature when there is one."""
    model = parsed.model
    graph = model.subgraphs[0]
    in_names, out_names = _signature_names(model)

    def describe(index: int, names: dict[int, str]) -> dict[str, Any]:
        tensor = graph.tensors[index]
        return {
            "name": names.get(index) or _text(tensor.name),
            "tensor": _text(tensor.name),
            "index": int(index),
            "shape": [int(d) for d in (tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape)],
            "dtype": _NUMPY_NAMES.get(tensor.type, _TYPE_NAMES.get(tensor.type, str(tensor.type))),
            "quantization": _quantization(tensor),
        }

    inputs = [describe(int(i), in_names) for i in (graph.inputs if graph.inputs is not None else [])]
    outputs = [describe(int(i), out_names) for i in (graph.outputs if graph.outputs is not None else [])]
    return inputs, outputs


def weight_census(parsed: ParsedModel) -> dict[str, Any]:
    """Count learned-parameter elements by storage precision and by consuming op.

    A parameter is a constant tensor of a float or low-bit integer type, or an
    int32 bias of a conv / fully-connected op. A constant that feeds a
    DEQUANTIZE op (weight-only and fp16 recipes) is attributed to the op that
    consumes the dequantized value, so ``by_op["CONV_2D"]`` says how that
    layer's weights are stored. ``float_layers`` lists the weight ops (conv,
    depthwise conv, fully connected, ...) whose main weight is stored as float.
    """
    model = parsed.model
    graph = model.subgraphs[0]
    tensors = graph.tensors or []
    ops = graph.operators or []
    producer: dict[int, int] = {}
    consumers: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for op_index, op in enumerate(ops):
        for out in op.outputs if op.outputs is not None else []:
            producer[int(out)] = op_index
        for slot, tin in enumerate(op.inputs if op.inputs is not None else []):
            if tin >= 0:
                consumers[int(tin)].append((op_index, slot))

    def source_constant(tensor_index: int) -> int | None:
        """The constant behind ``tensor_index``, looking through one DEQUANTIZE."""
        if _is_constant(model, tensors[tensor_index]):
            return tensor_index
        op_index = producer.get(tensor_index)
        if op_index is not None and parsed.op_names[op_index] == "DEQUANTIZE":
            src = int(ops[op_index].inputs[0])
            if _is_constant(model, tensors[src]):
                return src
        return None

    def final_consumer(tensor_index: int) -> tuple[int, int] | None:
        uses = consumers.get(tensor_index, [])
        if not uses:
            return None
        op_index, slot = uses[0]
        if parsed.op_names[op_index] == "DEQUANTIZE":
            outs = ops[op_index].outputs
            return final_consumer(int(outs[0])) if outs is not None and len(outs) else None
        return op_index, slot

    by_precision: Counter[str] = Counter()
    by_op: dict[str, Counter[str]] = defaultdict(Counter)
    for index, tensor in enumerate(tensors):
        if not _is_constant(model, tensor):
            continue
        key = _TYPE_NAMES.get(tensor.type, str(tensor.type))
        use = final_consumer(index)
        op_name = parsed.op_names[use[0]] if use else "(unused)"
        is_bias = key == "int32" and use is not None and WEIGHT_OPS.get(op_name) == use[1]
        if key not in _PARAM_KEYS and not is_bias:
            continue  # shapes, axes, paddings: not learned parameters
        n = _elements(tensor)
        by_precision[key] += n
        by_op[op_name][key] += n

    float_layers = []
    for op_index, (op, op_name) in enumerate(zip(ops, parsed.op_names)):
        if op_name not in WEIGHT_OPS or op.inputs is None or len(op.inputs) < 2:
            continue
        weight = source_constant(int(op.inputs[1])) if op.inputs[1] >= 0 else None
        if weight is None:
            continue
        key = _TYPE_NAMES.get(tensors[weight].type, "")
        if key in FLOAT_KEYS:
            float_layers.append(
                {"op": op_name, "index": op_index, "weight": _text(tensors[weight].name), "dtype": key, "elements": _elements(tensors[weight])}
            )
    return {
        "by_precision": dict(sorted(by_precision.items())),
        "by_op": {name: dict(sorted(c.items())) for name, c in sorted(by_op.items())},
        "float_layers": float_layers,
    }


def census_summary(census: dict[str, Any]) -> dict[str, Any]:
    """The census as artifacts and reports carry it (same keys as the ONNX backend's)."""
    return {
        "by_precision": census["by_precision"],
        "by_op": census["by_op"],
        "parameters": int(sum(census["by_precision"].values())),
    }


def _is_quantized(parsed: ParsedModel, census: dict[str, Any]) -> bool:
    if any(k not in FLOAT_KEYS and k != "int32" for k in census["by_precision"]):
        return True
    graph = parsed.model.subgraphs[0]
    return any(_quantization(t) is not None for t in graph.tensors or [])


def _quantized_tensors(parsed: ParsedModel) -> dict[str, int]:
    """How many tensors of each type carry quantization parameters (activations and weights)."""
    counts: Counter[str] = Counter()
    for tensor in parsed.model.subgraphs[0].tensors or []:
        if _quantization(tensor) is not None:
            counts[_TYPE_NAMES.get(tensor.type, str(tensor.type))] += 1
    return dict(sorted(counts.items()))


def inspect_bytes(data: bytes, name: str = "model") -> dict[str, Any]:
    """``inspect`` for bytes already in memory (``path`` and ``size_bytes`` are left to the caller)."""
    parsed = parse(data, name)
    inputs, outputs = io_description(parsed)
    census = weight_census(parsed)
    model = parsed.model
    return {
        "format": "tflite",
        "inputs": [{k: v for k, v in d.items() if k in ("name", "shape", "dtype", "quantization")} for d in inputs],
        "outputs": [{k: v for k, v in d.items() if k in ("name", "shape", "dtype", "quantization")} for d in outputs],
        "ops": dict(sorted(Counter(parsed.op_names).items())),
        "parameters": int(sum(census["by_precision"].values())),
        "weights": census_summary(census),
        "quantized": _is_quantized(parsed, census),
        "details": {
            "float_layers": census["float_layers"],
            "quantized_tensors": _quantized_tensors(parsed),
            "subgraphs": len(model.subgraphs),
            "signatures": [_text(s.signatureKey) for s in model.signatureDefs or []],
            "schema_version": int(model.version),
            "min_runtime_version": min_runtime_version(parsed),
            "description": _text(model.description),
            "io_tensors": {"inputs": {d["name"]: d["tensor"] for d in inputs}, "outputs": {d["name"]: d["tensor"] for d in outputs}},
        },
    }


def inspect(path: Path | str) -> dict[str, Any]:
    """Describe a .tflite file: format, path, size_bytes, inputs, outputs, ops,
    parameters, weights (census by precision and by op), quantized, details."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}", "Check the path") from None
    report = inspect_bytes(data, path.name)
    return {"format": "tflite", "path": str(path), "size_bytes": len(data), **{k: v for k, v in report.items() if k != "format"}}
