"""Give an integer-I/O .tflite a float interface by adding QUANTIZE / DEQUANTIZE ops.

litert-torch's PT2E path folds the first quantize and the last dequantize
into the model's inputs and outputs, so its INT8 models take and return int8
tensors, and it has no option to keep float I/O. When a profile asks for
``io = "float"``, this rewrite restores the float interface: each
int8/int16-quantized input gets a float32 twin feeding a QUANTIZE op, and each
quantized output a DEQUANTIZE op into a float32 twin. Signature entries keep
their names and point at the float tensors. Integer inputs that are not
quantized (token ids) are left alone.

This is the reverse of TensorFlow's ``modify_model_interface``; it edits the
flatbuffer with the schema object API that ships with ai-edge-litert.
"""

from __future__ import annotations

import copy

import flatbuffers

from edgekit.backends.tflite.inspect import parse, schema

_QUANTIZED_TYPES = (9, 7, 3)  # INT8, INT16, UINT8


def _is_quantized(tensor: object) -> bool:
    q = getattr(tensor, "quantization", None)
    return tensor.type in _QUANTIZED_TYPES and q is not None and q.scale is not None and len(q.scale) > 0  # type: ignore[attr-defined]


def _opcode_index(model: object, builtin: int) -> int:
    codes = model.operatorCodes  # type: ignore[attr-defined]
    for i, code in enumerate(codes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    new = schema.OperatorCodeT()
    new.builtinCode = builtin
    new.deprecatedBuiltinCode = min(builtin, 127)  # the deprecated int8 field saturates at 127
    new.version = 1
    codes.append(new)
    return len(codes) - 1


def _float_twin(tensor: object, name: str) -> object:
    twin = schema.TensorT()
    twin.shape = copy.copy(tensor.shape)  # type: ignore[attr-defined]
    twin.shapeSignature = copy.copy(tensor.shapeSignature)  # type: ignore[attr-defined]
    twin.type = 0  # FLOAT32
    twin.buffer = 0  # the empty sentinel buffer: an activation, not a constant
    twin.name = name
    twin.hasRank = getattr(tensor, "hasRank", True)
    return twin


def _wrap(
    tensors: list[object], indices: object, opcode: int, side: str, public: dict[int, str], changed: list[str]
) -> tuple[list[object], list[int], dict[int, int]]:
    """Give each quantized graph input (``side="in"``) or output (``"out"``) a float32 twin.

    Inputs get a QUANTIZE op twin → tensor, outputs a DEQUANTIZE op tensor →
    twin. Returns the new ops, the new graph input/output indices and the
    old → twin index map; appends the changed public names to ``changed``.
    """
    ops: list[object] = []
    interface: list[int] = []
    renames: dict[int, int] = {}
    for index in [] if indices is None else list(indices):  # type: ignore[call-overload]  # numpy array
        tensor = tensors[index]
        if not _is_quantized(tensor):
            interface.append(int(index))
            continue
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)  # type: ignore[attr-defined]
        tensor.name = f"{name}_quantized"  # type: ignore[attr-defined]
        tensors.append(_float_twin(tensor, name))
        twin = len(tensors) - 1
        op = schema.OperatorT()
        op.opcodeIndex = opcode
        if side == "in":
            op.inputs, op.outputs = [twin], [int(index)]
            op.builtinOptionsType = schema.BuiltinOptions.QuantizeOptions
            op.builtinOptions = schema.QuantizeOptionsT()
        else:
            op.inputs, op.outputs = [int(index)], [twin]
            op.builtinOptionsType = schema.BuiltinOptions.DequantizeOptions
            op.builtinOptions = schema.DequantizeOptionsT()
        ops.append(op)
        interface.append(twin)
        renames[int(index)] = twin
        changed.append(public.get(int(index), name))
    return ops, interface, renames


def float_interface(data: bytes) -> tuple[bytes, list[str]]:
    """Return ``data`` with float32 inputs/outputs in place of quantized ones, and the
    (signature) names of the inputs/outputs that changed.

    If nothing is quantized at the interface the bytes are returned as they are.
    Models whose buffers live outside the flatbuffer (offset-addressed, >2 GB)
    are returned unchanged too: repacking would have to move those buffers.
    """
    parsed = parse(data)
    model = parsed.model
    if any((b.offset or 0) > 1 for b in model.buffers or []):
        return data, []
    graph = model.subgraphs[0]
    tensors = graph.tensors
    public = {
        int(e.tensorIndex): (e.name.decode() if isinstance(e.name, bytes) else str(e.name))
        for sig in model.signatureDefs or []
        if sig.subgraphIndex == 0
        for e in (sig.inputs or []) + (sig.outputs or [])
    }
    changed: list[str] = []
    quantize = _opcode_index(model, schema.BuiltinOperator.QUANTIZE)
    dequantize = _opcode_index(model, schema.BuiltinOperator.DEQUANTIZE)
    front, new_inputs, renames = _wrap(tensors, graph.inputs, quantize, "in", public, changed)
    back, new_outputs, out_renames = _wrap(tensors, graph.outputs, dequantize, "out", public, changed)
    if not changed:
        return data, []
    graph.operators = front + list(graph.operators or []) + back
    graph.inputs = new_inputs
    graph.outputs = new_outputs
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex != 0:
            continue
        for entry in sig.inputs or []:
            entry.tensorIndex = renames.get(int(entry.tensorIndex), entry.tensorIndex)
        for entry in sig.outputs or []:
            entry.tensorIndex = out_renames.get(int(entry.tensorIndex), entry.tensorIndex)
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), changed
