"""A .tflite as the C/C++ library a TFLite Micro firmware compiles in.

``write_c_library(tflite_path, out_dir, name, arena_bytes)`` writes, for a
model named ``NAME`` (a C identifier):

- ``NAME_data.h`` / ``NAME_data.cc``: the model bytes as
  ``alignas(16) const unsigned char g_NAME[]`` and ``const unsigned int
  g_NAME_len``. TFLM reads the flatbuffer in place, so it must be 16-byte
  aligned; ``const`` keeps it in flash.
- ``NAME_settings.h``: per input and output a struct (``NAME::Input0``, ...)
  with the C type, shape, scale and zero point, ``Quantize`` / ``Dequantize``
  helpers, and ``NAME::kTensorArenaSize``, the arena measured in TFLite Micro
  (``micro.check``). It and the data files need only the C++17 standard
  library, so they compile anywhere.
- ``NAME_op_resolver.h``: ``NAME::OpResolver``, a
  ``tflite::MicroMutableOpResolver<N>`` sized for exactly the ops the
  flatbuffer uses, and ``NAME::RegisterOps`` with one ``AddXxx()`` per op.
- ``main.cc``: a minimal program that runs the model once and prints its outputs.

Every file is written atomically; nothing else in ``out_dir`` is touched.
Reading the model needs only the flatbuffer schema (no torch, no converter);
measuring the arena, when the caller has not, runs TFLite Micro in a child process.
"""

from __future__ import annotations

import functools
import keyword
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from edgekit.artifact import atomic_write_bytes, ensure_writable_dir
from edgekit.backends.tflite.inspect import ParsedModel, io_description, parse, schema
from edgekit.errors import ArtifactError, InputError, UnsupportedModelError

# TFLite op (as ``inspect.parse`` names it) -> the MicroMutableOpResolver method that registers its kernel.
# Read from tensorflow/lite/micro/micro_mutable_op_resolver.h (tflite-micro commit 90b983c, 2026-08): each
# ``AddXxx`` there calls ``AddBuiltin(BuiltinOperator_OP, ...)`` or ``AddCustom("name", ...)``. The names do not
# follow one rule (AddConv2D, AddBatchToSpaceNd, AddSvdf, AddUnidirectionalSequenceLSTM), so they are listed.
RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul", "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill",
    "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish", "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual", "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D",
    "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean", "MINIMUM": "AddMinimum", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable", "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu", "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound",
    "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt",
    "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference", "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose", "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
    # Custom ops TFLM has kernels for, under the custom code the flatbuffer carries.
    "CUSTOM:TFLite_Detection_PostProcess": "AddDetectionPostprocess", "CUSTOM:CIRCULAR_BUFFER": "AddCircularBuffer",
}

# numpy dtype name (``io_description``) -> C type of the tensor's data, for the types TFLM has I/O kernels for.
_C_TYPES: dict[str, str] = {
    "int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t",
    "float32": "float", "bool": "bool",
}
_QUANTIZED_IO = frozenset({"int8", "uint8", "int16"})
_CPP_KEYWORDS = frozenset(
    """alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t class
    compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype
    default delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline
    int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
    reinterpret_cast requires return short signed sizeof static static_assert static_cast struct switch template
    this thread_local throw true try typedef typeid typename union unsigned using virtual void volatile wchar_t
    while xor xor_eq main std tflite""".split()
)
_BYTES_PER_LINE = 12
_HEX = [f"0x{b:02x}" for b in range(256)]


@dataclass(frozen=True)
class CLibrary:
    """A written library: its folder, its files (in writing order), and the facts baked into them."""

    folder: Path
    name: str
    files: tuple[Path, ...]
    array: str  # the C array holding the model bytes (its length is ``<array>_len``)
    ops: tuple[str, ...]  # TFLite ops in registration order (first use in the graph)
    resolver_methods: tuple[str, ...]  # the AddXxx call for each op, same order
    arena_bytes: int
    arena_method: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder), "name": self.name, "files": [p.name for p in self.files],
            "array": self.array, "ops": list(self.ops), "resolver_methods": list(self.resolver_methods),
            "arena_bytes": self.arena_bytes, "arena_method": self.arena_method,
        }


@dataclass(frozen=True)
class _Tensor:
    """One model input or output as the settings header describes it."""

    struct: str  # "Input0", "Output1", ...
    index: int  # position among the inputs (or outputs), as the interpreter numbers them
    name: str
    dtype: str
    c_type: str
    shape: tuple[int, ...]
    scale: float | None  # None: not quantized
    zero_point: int

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


def default_name(path: Path) -> str:
    """A C identifier made from a model file's name: ``cnn.pt2e-static.tflite`` -> ``cnn_pt2e_static``."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    name = re.sub(r"[^0-9A-Za-z_]+", "_", stem).strip("_").lower()[:48] or "model"
    name = f"model_{name}" if name[0].isdigit() else name
    return f"{name}_model" if name in _CPP_KEYWORDS or keyword.iskeyword(name) else name


def check_name(name: str) -> str:
    """``name`` if it can prefix the library's C++ identifiers and file names; else InputError."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", name) or name in _CPP_KEYWORDS or keyword.iskeyword(name):
        raise InputError(
            f"'{name}' cannot name a C/C++ library (it prefixes C++ identifiers and file names)",
            "Use a name of letters, digits and underscores that starts with a letter and is not a C++ keyword, "
            "e.g. --name keyword_spotting",
        )
    return name


@functools.cache
def _builtin_names() -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if isinstance(v, int) and not k.startswith("_")}


def _op_name(model: Any, op: Any) -> str:
    """An operator's name as ``inspect.parse`` names it (builtin name, or ``CUSTOM:<code>``)."""
    opcode = model.operatorCodes[op.opcodeIndex]
    code = max(opcode.builtinCode, opcode.deprecatedBuiltinCode)
    if code == schema.BuiltinOperator.CUSTOM:
        custom = opcode.customCode
        return f"CUSTOM:{custom.decode('utf-8', 'replace') if isinstance(custom, bytes) else custom}"
    return _builtin_names().get(code, f"BUILTIN_{code}")


def model_ops(parsed: ParsedModel) -> list[str]:
    """Every distinct op the model runs, in order of first use: subgraph 0 first, then the subgraphs that
    IF / WHILE / CALL_ONCE call (TFLM resolves the ops of every subgraph when it allocates)."""
    names = list(parsed.op_names)
    for graph in parsed.model.subgraphs[1:]:
        names.extend(_op_name(parsed.model, op) for op in graph.operators or [])
    return list(dict.fromkeys(names))


def resolver_methods(ops: list[str], target: str | None = None) -> list[str]:
    """The ``MicroMutableOpResolver`` method for each op; UnsupportedModelError names ops TFLM has no kernel for."""
    missing = [op for op in ops if op not in RESOLVER_METHODS]
    if missing:
        where = f"target '{target}'" if target else "a microcontroller"
        plural = len(missing) > 1
        raise UnsupportedModelError(
            f"op{'s' if plural else ''} {', '.join(missing)} {'have' if plural else 'has'} no TFLite Micro kernel "
            f"(MicroMutableOpResolver has no Add method for {'them' if plural else 'it'}), so {where} cannot run "
            "this model",
            "Replace the op in the model with ops TFLite Micro has kernels for, or target a device with the full "
            "LiteRT runtime",
        )
    return [RESOLVER_METHODS[op] for op in ops]


def _tensor(described: dict[str, Any], parsed: ParsedModel, struct: str, index: int) -> _Tensor:
    """The settings-header view of one I/O tensor; UnsupportedModelError for what TFLM's I/O cannot hold."""
    c_type = _C_TYPES.get(described["dtype"])
    # The concrete shape, not the signature: TFLM allocates what the flatbuffer's ``shape`` says.
    raw = parsed.model.subgraphs[0].tensors[described["index"]].shape
    shape = tuple(int(d) for d in (raw if raw is not None else []))
    # Only integer tensors are quantized; quantization parameters on a float tensor mean nothing to TFLM.
    q = described["quantization"] if described["dtype"].startswith(("int", "uint")) else None
    problem = None
    if c_type is None:
        problem = f"its dtype {described['dtype']} is not one TFLite Micro passes in or out"
    elif any(d < 0 for d in shape):
        problem = f"its shape {list(shape)} has a dynamic dimension"
    elif q is not None and isinstance(q["scale"], list):
        problem = "it is quantized per channel"
    elif q is not None and described["dtype"] not in _QUANTIZED_IO:
        problem = f"it is a quantized {described['dtype']} tensor (TFLite Micro quantizes I/O as int8, uint8 or int16)"
    if problem:
        raise UnsupportedModelError(
            f"model {struct.lower().rstrip('0123456789')} '{described['name']}' cannot be described for TFLite "
            f"Micro: {problem}",
            "Export the model with a fixed batch and per-tensor int8 (or float32) inputs and outputs",
        )
    scale = None if q is None else float(q["scale"])
    zero_point = 0 if q is None else int(q["zero_point"])
    return _Tensor(struct, index, described["name"], described["dtype"], str(c_type), shape, scale, zero_point)


def _tensors(parsed: ParsedModel) -> tuple[list[_Tensor], list[_Tensor]]:
    inputs, outputs = io_description(parsed)
    return ([_tensor(d, parsed, f"Input{k}", k) for k, d in enumerate(inputs)],
            [_tensor(d, parsed, f"Output{k}", k) for k, d in enumerate(outputs)])


def _float_literal(value: float) -> str:
    """A C++ float literal that parses back to exactly this float32 (9 significant digits always do)."""
    text = f"{value:.9g}"
    if not any(c in text for c in ".en"):
        text += ".0"  # "1f" is not a float literal; "1.0f" is
    return f"{text}f"


def _c_string(text: str) -> str:
    """``text`` as a C string literal: printable ASCII as is, everything else as octal escapes (at most three
    digits, so unlike ``\\x`` an escape cannot swallow the characters after it)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    """``text`` made safe inside a ``//`` comment: one line, and no backslash that would continue it."""
    return re.sub(r"[\r\n]+", " ", text).replace("\\", "/")


def render_data_header(name: str, source: str) -> str:
    """``NAME_data.h``: declarations of the model array and its length."""
    guard = f"{name.upper()}_DATA_H_"
    return (
        f"// The TFLite model {_comment(source)} as a C array (generated by edgekit export-c).\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"// The flatbuffer bytes, 16-byte aligned as TFLite Micro requires: pass g_{name} to tflite::GetModel().\n"
        f"extern const unsigned char g_{name}[];\n"
        f"// The number of bytes in g_{name} (the size of the .tflite file).\n"
        f"extern const unsigned int g_{name}_len;\n\n"
        f"#endif  // {guard}\n"
    )


def render_data_source(name: str, data: bytes, source: str) -> str:
    """``NAME_data.cc``: the model bytes, 12 per line; ``const`` so the linker keeps them in flash."""
    lines = [", ".join(map(_HEX.__getitem__, data[i : i + _BYTES_PER_LINE]))
             for i in range(0, len(data), _BYTES_PER_LINE)]
    body = ",\n    ".join(lines)
    return (
        f"// The TFLite model {_comment(source)} ({len(data)} bytes; generated by edgekit export-c).\n"
        f'#include "{name}_data.h"\n\n'
        f"alignas(16) const unsigned char g_{name}[] = {{\n    {body}\n}};\n\n"
        f"const unsigned int g_{name}_len = {len(data)};\n"
    )


def _render_struct(tensor: _Tensor, role: str) -> str:
    shape = ", ".join(str(d) for d in tensor.shape) or "1"
    quantized = tensor.scale is not None
    return (
        f"// {role} {tensor.index}: {_comment(tensor.name)}, {tensor.dtype}, shape [{shape}]"
        f"{', quantized: real = scale * (value - zero_point)' if quantized else ''}.\n"
        f"struct {tensor.struct} {{\n"
        f"  using Type = {tensor.c_type};\n"
        f"  static constexpr int kIndex = {tensor.index};  // interpreter.{role.lower()}({tensor.index})\n"
        f"  static constexpr const char* kName = {_c_string(tensor.name)};\n"
        f"  static constexpr int kRank = {max(len(tensor.shape), 1)};\n"
        f"  static constexpr int kShape[kRank] = {{{shape}}};\n"
        f"  static constexpr int kElementCount = {tensor.elements};\n"
        f"  static constexpr bool kQuantized = {'true' if quantized else 'false'};\n"
        f"  static constexpr float kScale = {_float_literal(tensor.scale) if quantized else '0.0f'};\n"
        f"  static constexpr int32_t kZeroPoint = {tensor.zero_point};\n"
        f"}};\n"
    )


_HELPERS = """\
// A real value in a tensor's type: quantized with its scale and zero point (rounded half away from zero,
// clamped to the type's range), or converted as is when the tensor is not quantized.
template <typename Tensor>
typename Tensor::Type Quantize(float value) {
  using T = typename Tensor::Type;
  if constexpr (!Tensor::kQuantized) {
    return static_cast<T>(value);
  } else {
    constexpr int64_t kLow = static_cast<int64_t>(std::numeric_limits<T>::min());
    constexpr int64_t kHigh = static_cast<int64_t>(std::numeric_limits<T>::max());
    // Clamp in float first so the integer conversion cannot overflow (a NaN lands on the low end).
    const float lo = static_cast<float>(kLow - Tensor::kZeroPoint - 1);
    const float hi = static_cast<float>(kHigh - Tensor::kZeroPoint + 1);
    float scaled = value / Tensor::kScale;
    scaled = !(scaled >= lo) ? lo : (scaled > hi ? hi : scaled);
    // Round before adding the zero point: a cast truncates toward zero, which rounds only one sign right.
    const int64_t q = static_cast<int64_t>(scaled >= 0.0f ? scaled + 0.5f : scaled - 0.5f) + Tensor::kZeroPoint;
    return static_cast<T>(q < kLow ? kLow : (q > kHigh ? kHigh : q));
  }
}

// A tensor value as a real number: scale * (value - zero_point) when quantized.
template <typename Tensor>
float Dequantize(typename Tensor::Type value) {
  if constexpr (!Tensor::kQuantized) {
    return static_cast<float>(value);
  } else {
    return Tensor::kScale * static_cast<float>(static_cast<int32_t>(value) - Tensor::kZeroPoint);
  }
}
"""


def render_settings(name: str, inputs: list[_Tensor], outputs: list[_Tensor], arena_bytes: int,
                    arena_method: str, source: str) -> str:
    """``NAME_settings.h``: arena size and I/O facts as constexpr, needing only the standard library."""
    guard = f"{name.upper()}_SETTINGS_H_"
    structs = "\n".join([_render_struct(t, "Input") for t in inputs] + [_render_struct(t, "Output") for t in outputs])
    return (
        f"// Facts of the TFLite model {_comment(source)} for TFLite Micro (generated by edgekit export-c).\n"
        f"#ifndef {guard}\n#define {guard}\n\n#include <cstdint>\n#include <limits>\n\n"
        f"namespace {name} {{\n\n"
        f"// Tensor arena: {arena_bytes} bytes, {_comment(arena_method)}. Kernels other than TFLM's reference\n"
        "// ones (CMSIS-NN, ESP-NN) may need more scratch space: check interpreter.arena_used_bytes() on the device.\n"
        f"constexpr int kTensorArenaSize = {arena_bytes};\n"
        f"constexpr int kInputCount = {len(inputs)};\n"
        f"constexpr int kOutputCount = {len(outputs)};\n\n"
        f"{structs}\n{_HELPERS}\n"
        f"}}  // namespace {name}\n\n#endif  // {guard}\n"
    )


def render_op_resolver(name: str, ops: list[str], methods: list[str], source: str) -> str:
    """``NAME_op_resolver.h``: a resolver sized for exactly the model's ops, and the calls that fill it."""
    guard = f"{name.upper()}_OP_RESOLVER_H_"
    calls = "".join(f"  TF_LITE_ENSURE_STATUS(resolver.{m}());  // {op}\n" for op, m in zip(ops, methods))
    return (
        f"// The TFLite Micro ops of {_comment(source)}, read from its flatbuffer (generated by edgekit export-c).\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
        f"namespace {name} {{\n\n"
        "// One slot per distinct op: registering only these keeps unused kernels out of the firmware.\n"
        f"constexpr unsigned int kOpCount = {len(ops)};\n"
        f"using OpResolver = tflite::MicroMutableOpResolver<{len(ops)}>;\n\n"
        "// Registers every op the model uses; returns the first failure.\n"
        f"inline TfLiteStatus RegisterOps(OpResolver& resolver) {{\n{calls}  return kTfLiteOk;\n}}\n\n"
        f"}}  // namespace {name}\n\n#endif  // {guard}\n"
    )


def _fill_input(tensor: _Tensor) -> str:
    var, struct = tensor.struct.lower(), tensor.struct
    return (
        f"  // {_comment(tensor.name)}: replace the zeros with real data (Quantize converts real values).\n"
        f"  auto* {var} = interpreter.typed_input_tensor<{struct}::Type>({struct}::kIndex);\n"
        f"  if ({var} == nullptr) return Fail(\"input {tensor.index} has an unexpected type\");\n"
        f"  for (int i = 0; i < {struct}::kElementCount; ++i) {var}[i] = Quantize<{struct}>(0.0f);\n"
    )


def _print_output(tensor: _Tensor) -> str:
    var, struct = tensor.struct.lower(), tensor.struct
    real = f"static_cast<double>(Dequantize<{struct}>({var}[i]))"
    if tensor.scale is not None:
        line = f'MicroPrintf("%s[%d] = %f (raw %d)", {struct}::kName, i, {real}, static_cast<int>({var}[i]));'
    else:
        line = f'MicroPrintf("%s[%d] = %f", {struct}::kName, i, {real});'
    return (
        f"  auto* {var} = interpreter.typed_output_tensor<{struct}::Type>({struct}::kIndex);\n"
        f"  if ({var} == nullptr) return Fail(\"output {tensor.index} has an unexpected type\");\n"
        f"  for (int i = 0; i < {struct}::kElementCount; ++i) {{\n    {line}\n  }}\n"
    )


def render_main(name: str, inputs: list[_Tensor], outputs: list[_Tensor]) -> str:
    """``main.cc``: load, allocate, fill the inputs, invoke once and print the outputs."""
    fills = "".join(_fill_input(t) for t in inputs)
    prints = "".join(_print_output(t) for t in outputs)
    return (
        f"// Minimal TFLite Micro program for {name}: runs the model once on zero inputs and prints its outputs.\n"
        "// Generated by edgekit export-c; build it with TFLite Micro (see edgekit's docs/microcontrollers.md).\n"
        "#include <cstdint>\n\n"
        '#include "tensorflow/lite/micro/micro_interpreter.h"\n'
        '#include "tensorflow/lite/micro/micro_log.h"\n'
        '#include "tensorflow/lite/micro/system_setup.h"\n'
        '#include "tensorflow/lite/schema/schema_generated.h"\n'
        f'#include "{name}_data.h"\n#include "{name}_op_resolver.h"\n#include "{name}_settings.h"\n\n'
        "namespace {\n"
        "// Static, not on the stack: a microcontroller's stack is far smaller than most arenas.\n"
        f"alignas(16) uint8_t tensor_arena[{name}::kTensorArenaSize];\n\n"
        "int Fail(const char* what) {\n  MicroPrintf(\"error: %s\", what);\n  return 1;\n}\n"
        "}  // namespace\n\n"
        "int main() {\n"
        f"  using namespace {name};  // Input0, Output0, Quantize, Dequantize, OpResolver, ... of this model\n"
        "  tflite::InitializeTarget();\n"
        f"  const tflite::Model* tflite_model = tflite::GetModel(g_{name});\n"
        "  if (tflite_model->version() != TFLITE_SCHEMA_VERSION) return Fail(\"model schema version differs from TFLM's\");\n\n"
        "  static OpResolver resolver;\n"
        "  if (RegisterOps(resolver) != kTfLiteOk) return Fail(\"registering the ops failed\");\n\n"
        "  static tflite::MicroInterpreter interpreter(tflite_model, resolver, tensor_arena, kTensorArenaSize);\n"
        "  if (interpreter.AllocateTensors() != kTfLiteOk) {\n"
        "    return Fail(\"AllocateTensors failed: raise kTensorArenaSize (kernels differ between TFLM builds)\");\n"
        "  }\n"
        "  MicroPrintf(\"arena: %u of %d bytes used\", static_cast<unsigned>(interpreter.arena_used_bytes()),\n"
        "              kTensorArenaSize);\n\n"
        f"{fills}\n"
        "  if (interpreter.Invoke() != kTfLiteOk) return Fail(\"Invoke failed\");\n\n"
        f"{prints}"
        "  return 0;\n}\n"
    )


def _read_model(tflite_path: Path) -> tuple[bytes, ParsedModel]:
    try:
        data = tflite_path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {tflite_path}: {exc.strerror or exc}", "Check the path") from None
    return data, parse(data, tflite_path.name)


def _measured_arena(data: bytes, target: str | None) -> tuple[int, str]:
    """The arena TFLite Micro needs for ``data``, measured the way the build measures it (``micro.check``)."""
    from edgekit.backends.tflite import micro

    facts = micro.check(data, target or "microcontroller")
    version = f", tflite-micro {facts['tflite_micro']}" if facts.get("tflite_micro") else ""
    return int(facts["arena_bytes"]), f"{facts['method']}{version}"


def write_c_library(tflite_path: Path, out_dir: Path, name: str, arena_bytes: int | None = None,
                    arena_method: str | None = None, target: str | None = None) -> CLibrary:
    """Write the C/C++ library of the .tflite at ``tflite_path`` into ``out_dir`` (created if needed).

    ``name`` (a C identifier, see ``check_name``) prefixes the files, the array ``g_<name>`` and the C++
    namespace. ``arena_bytes``: the tensor arena the build already measured (``micro.check``), with
    ``arena_method`` saying how; when None it is measured here, in TFLite Micro when installed.
    ``target`` only names the device in error messages.

    Raises ArtifactError (not a readable .tflite), InputError (bad name), UnsupportedModelError (an op
    without a TFLite Micro kernel, or an input/output TFLM cannot pass), OutputError (``out_dir`` not
    writable). Everything is checked before the first file is written.
    """
    tflite_path, out_dir = Path(tflite_path), Path(out_dir)
    check_name(name)
    data, parsed = _read_model(tflite_path)
    ops = model_ops(parsed)
    methods = resolver_methods(ops, target)
    inputs, outputs = _tensors(parsed)
    if arena_bytes is None:
        arena_bytes, arena_method = _measured_arena(data, target)
    arena_bytes = -(-int(arena_bytes) // 16) * 16  # TFLM allocates in 16-byte steps
    method = arena_method or "as measured by the caller"
    source = tflite_path.name
    contents = {
        f"{name}_data.h": render_data_header(name, source),
        f"{name}_data.cc": render_data_source(name, data, source),
        f"{name}_settings.h": render_settings(name, inputs, outputs, arena_bytes, method, source),
        f"{name}_op_resolver.h": render_op_resolver(name, ops, methods, source),
        "main.cc": render_main(name, inputs, outputs),
    }
    ensure_writable_dir(out_dir)
    for file_name, text in contents.items():
        atomic_write_bytes(out_dir / file_name, text.encode("utf-8"))
    return CLibrary(out_dir, name, tuple(out_dir / f for f in contents), f"g_{name}", tuple(ops), tuple(methods),
                    arena_bytes, method)


def write_for_build(artifact: Path, folder: Path, micro: Mapping[str, Any] | None, target: str) -> CLibrary:
    """The library a build ships beside ``artifact`` for a microcontroller target, named after the file,
    with the tensor arena the build measured (``micro``: the candidate's microcontroller facts)."""
    facts = micro or {}
    return write_c_library(artifact, folder, default_name(artifact), facts.get("arena_bytes"), facts.get("method"),
                           target)
