"""TFLite Micro facts for microcontroller targets: op set, tensor arena, flash.

``check(data, target)`` refuses a model that uses an op TFLite Micro has no
kernel for (UnsupportedModelError naming the op and the target), then
measures the smallest tensor arena the model runs in.

Arena measurement: with the ``tflite-micro`` package installed, the model is
loaded by TFLM's Python interpreter
(``tflite_micro.python.tflite_micro.runtime.Interpreter.from_bytes(model,
arena_size=N)``), which fails with "failed to allocate tensors" when N is too
small; the minimum N is found by bisection and then proven by one ``invoke``.
This runs in a child process because TFLM is native code. Without tflite-micro
(or if the child fails) the arena is estimated from the graph: the peak of
live activation bytes in execution order plus TFLM's per-tensor bookkeeping,
reported with ``method = "computed from the graph"``.

Flash is the .tflite size: TFLM executes the flatbuffer in place from flash
(the interpreter's own code size is not included).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.tflite.inspect import ParsedModel, io_description, parse
from edgekit.errors import UnsupportedModelError

# Builtin ops with a kernel in TFLite Micro's op resolver, read from the
# Register_* symbols of tflite-micro 0.dev20261023 (TFLM's AllOpsResolver).
# Kernels may still reject a dtype (e.g. some ops are int8-only); the
# measurement step catches that when tflite-micro is installed.
TFLM_OPS: frozenset[str] = frozenset(
    """ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
    BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM DEPTHWISE_CONV_2D
    DEPTH_TO_SPACE DEQUANTIZE DETECTION_POSTPROCESS DIV DYNAMIC_UPDATE_SLICE ELU EMBEDDING_LOOKUP EQUAL
    EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL
    HARD_SWISH IF L2_NORMALIZATION L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT
    LOGICAL_OR LOGISTIC LOG_SOFTMAX MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD
    PADV2 PRELU QUANTIZE READ_VARIABLE REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR
    RESIZE_NEAREST_NEIGHBOR REVERSE_V2 ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND
    SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH
    TRANSPOSE TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE""".split()
)

_MAX_ARENA = 64 << 20  # above this, the problem is not the arena
_ALIGN = 16  # TFLM aligns arena allocations to 16 bytes
# Per non-constant tensor: TfLiteEvalTensor + TfLiteTensor + planner entry, measured order of magnitude.
_PER_TENSOR_OVERHEAD = 96
_BASE_OVERHEAD = 1024
_TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8, 15: 4, 16: 2, 17: 1}


def tflite_micro_available() -> bool:
    return importlib.util.find_spec("tflite_micro") is not None


def tflite_micro_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("tflite-micro")
    except Exception:
        return None


def unsupported_ops(op_names: list[str]) -> list[str]:
    """Ops of the model TFLite Micro has no kernel for, sorted, each once."""
    return sorted({name for name in op_names if name not in TFLM_OPS})


def computed_arena_bytes(parsed: ParsedModel) -> int:
    """Peak live activation bytes in execution order, plus bookkeeping (an estimate, not a measurement)."""
    model = parsed.model
    graph = model.subgraphs[0]
    tensors = graph.tensors or []

    def constant(i: int) -> bool:
        t = tensors[i]
        if not t.buffer or t.buffer >= len(model.buffers or []):
            return False
        b = model.buffers[t.buffer]
        return (b.data is not None and len(b.data) > 0) or (b.offset or 0) > 1

    def nbytes(i: int) -> int:
        t = tensors[i]
        n = int(np.prod([max(int(d), 1) for d in (t.shape if t.shape is not None else [])])) if t.shape is not None and len(t.shape) else 1
        return -(-n * _TYPE_BYTES.get(t.type, 4) // _ALIGN) * _ALIGN

    ops = graph.operators or []
    last_use: dict[int, int] = {}
    first_def: dict[int, int] = {}
    for i in graph.inputs if graph.inputs is not None else []:
        first_def[int(i)] = 0
    for k, op in enumerate(ops):
        for i in op.inputs if op.inputs is not None else []:
            if i >= 0:
                last_use[int(i)] = k
        for i in op.outputs if op.outputs is not None else []:
            first_def.setdefault(int(i), k)
    for i in graph.outputs if graph.outputs is not None else []:
        last_use[int(i)] = len(ops)
    peak = 0
    for k in range(len(ops) + 1):
        live = sum(nbytes(i) for i, start in first_def.items() if not constant(i) and start <= k <= last_use.get(i, start))
        peak = max(peak, live)
    runtime_tensors = sum(1 for i in range(len(tensors)) if not constant(i))
    return peak + runtime_tensors * _PER_TENSOR_OVERHEAD + _BASE_OVERHEAD


def measure_arena(data: bytes) -> dict[str, Any]:
    """Smallest arena TFLM runs ``data`` in, by bisection (run inside this process: call via a child)."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    def works(size: int) -> bool:
        try:
            tflm.Interpreter.from_bytes(data, arena_size=size)
            return True
        except RuntimeError as exc:
            # Too small an arena fails as "failed to allocate tensors", or at some
            # sizes as "All temp buffers must be freed before ResetTempAllocations()".
            if "allocat" in str(exc).lower():
                return False
            raise

    high = 4096
    while not works(high):
        high *= 2
        if high > _MAX_ARENA:
            raise RuntimeError(f"no arena up to {_MAX_ARENA} bytes was enough")
    low = 0
    while high - low > _ALIGN:
        mid = (low + high) // 2
        if works(mid):
            high = mid
        else:
            low = mid
    # Prove the model runs (kernels may reject a dtype only at Prepare/Invoke).
    interpreter = tflm.Interpreter.from_bytes(data, arena_size=high)
    inputs, _ = io_description(parse(data))
    for k in range(len(inputs)):
        details = interpreter.get_input_details(k)
        interpreter.set_input(np.zeros(details["shape"], dtype=details["dtype"]), k)
    interpreter.invoke()
    return {"arena_bytes": int(high)}


def _measure_in_child(data: bytes) -> dict[str, Any]:
    """Run ``measure_arena`` in a child process so a TFLM crash cannot take the build down."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        proc = subprocess.run(
            [sys.executable, "-m", "edgekit.backends.tflite.micro", str(path)],
            capture_output=True,
            env=env,
            timeout=600,
        )
    lines = [ln for ln in proc.stdout.decode("utf-8", "replace").splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"error": tail[0][:300]}
    return json.loads(lines[-1])


def check(data: bytes, target: str) -> dict[str, Any]:
    """Op-set check and memory facts for a microcontroller target.

    Returns ``{"arena_bytes", "flash_bytes", "method", ...}``; raises
    UnsupportedModelError naming the ops outside TFLite Micro and ``target``.
    """
    parsed = parse(data)
    missing = unsupported_ops(parsed.op_names)
    if missing:
        raise UnsupportedModelError(
            f"op{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not in the TFLite Micro op set, so target '{target}' cannot run this model",
            "Replace the op in the model (e.g. GELU -> ReLU, or a tanh approximation built from supported ops), "
            "or target a device with the full LiteRT runtime",
        )
    result: dict[str, Any] = {"flash_bytes": len(data)}
    if tflite_micro_available():
        measured = _measure_in_child(data)
        if "arena_bytes" in measured:
            result.update(
                arena_bytes=measured["arena_bytes"],
                method="measured with tflite-micro by bisection",
                tflite_micro=tflite_micro_version(),
            )
            return result
        if "allocat" not in measured.get("error", "").lower() and measured.get("error"):
            # TFLM loaded the ops but a kernel refused the model (e.g. an unsupported dtype).
            raise UnsupportedModelError(
                f"TFLite Micro cannot run the model for target '{target}': {measured['error']}",
                "Use full-integer (int8) quantization with int8 I/O, or replace the op the message names",
            )
        result["measurement_error"] = measured.get("error")
    result.update(arena_bytes=computed_arena_bytes(parsed), method="computed from the graph")
    return result


def _main(argv: list[str]) -> int:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # TFLM prints to stdout; keep our JSON line clean
    data = Path(argv[0]).read_bytes()
    try:
        result = measure_arena(data)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
