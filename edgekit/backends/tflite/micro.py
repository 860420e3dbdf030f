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

``run(data, feeds, arena_bytes)`` runs samples through TFLM itself (also in a
child process), so a build can compare TFLM's outputs with LiteRT's: the
pipeline validates in LiteRT, and TFLM's reference kernels are not the same
code (see ``agreement``).
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


def _allocates(tflm: Any, data: bytes, size: int) -> bool:
    """Whether TFLM allocates ``data`` in a ``size``-byte arena; raises for failures that are not about size."""
    try:
        tflm.Interpreter.from_bytes(data, arena_size=size)
        return True
    except RuntimeError as exc:
        # Too small an arena fails as "failed to allocate tensors", or at some
        # sizes as "All temp buffers must be freed before ResetTempAllocations()".
        if "allocat" in str(exc).lower():
            return False
        raise


def _allocates_isolated(tflm: Any, data: bytes, size: int) -> bool:
    """``_allocates`` in a forked process: TFLM sometimes crashes on a too-small arena instead of failing.

    Measured: an int8 MLP that needs 4096 bytes segfaulted at 2496 (after
    clean "failed to allocate" errors at 2432 and below), which killed the
    whole bisection. A probe that dies counts as "too small": the search only
    ever settles on a size that allocated, and that size is proven by a run.
    """
    if not hasattr(os, "fork"):
        return _allocates(tflm, data, size)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked probe reports through its exit code only
        code = 3
        try:
            code = 0 if _allocates(tflm, data, size) else 1
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return False
    if os.WEXITSTATUS(status) == 2:
        return _allocates(tflm, data, size)  # re-raise the error here, with its message
    return os.WEXITSTATUS(status) == 0


def measure_arena(data: bytes) -> dict[str, Any]:
    """Smallest arena TFLM runs ``data`` in, by bisection (run inside this process: call via a child)."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    def works(size: int) -> bool:
        return _allocates_isolated(tflm, data, size)

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


def run_samples(data: bytes, arena_bytes: int, inputs: list[np.ndarray], count: int) -> list[np.ndarray]:
    """Run ``count`` batch-1 samples in TFLM (run inside this process: call via a child).

    ``inputs`` holds one array per model input, in graph order and model
    dtypes, with ``count`` samples along axis 0; returns raw outputs likewise.
    """
    from tflite_micro.python.tflite_micro import runtime as tflm

    interpreter = tflm.Interpreter.from_bytes(data, arena_size=arena_bytes)
    _, described = io_description(parse(data))
    outputs: list[list[np.ndarray]] = [[] for _ in described]
    for i in range(count):
        for k, array in enumerate(inputs):
            interpreter.set_input(np.ascontiguousarray(array[i : i + 1]), k)
        interpreter.invoke()
        for k, slot in enumerate(outputs):
            slot.append(np.array(interpreter.get_output(k)))
    return [np.concatenate(slot, axis=0) for slot in outputs]


def _child(args: list[str], timeout: float = 600) -> tuple[int, str, str]:
    """Run ``python -m edgekit.backends.tflite.micro ARGS``; returns (exit code, stdout, stderr)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit.backends.tflite.micro", *args], capture_output=True, env=env, timeout=timeout
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def _last_error(code: int, stderr: str) -> str:
    tail = stderr.strip().splitlines()[-1:] or [f"exit code {code}"]
    return tail[0][:300]


def _measure_in_child(data: bytes) -> dict[str, Any]:
    """Run ``measure_arena`` in a child process so a TFLM crash cannot take the build down."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        code, stdout, stderr = _child([str(path)])
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if code != 0 or not lines:
        return {"error": _last_error(code, stderr)}
    return json.loads(lines[-1])


def _to_model_dtype(value: np.ndarray, described: dict[str, Any]) -> np.ndarray:
    """A feed in the tensor's dtype: float quantized with its scale and zero point, integers cast."""
    dtype = np.dtype(described["dtype"])
    q = described["quantization"]
    if q is not None and np.issubdtype(dtype, np.integer) and np.issubdtype(value.dtype, np.floating):
        info = np.iinfo(dtype)
        value = np.clip(np.round(value / q["scale"]) + q["zero_point"], info.min, info.max)
    return np.ascontiguousarray(value, dtype=dtype)


def _from_model_dtype(value: np.ndarray, described: dict[str, Any]) -> np.ndarray:
    q = described["quantization"]
    if q is not None and np.issubdtype(value.dtype, np.integer):
        return ((value.astype(np.float32) - np.float32(q["zero_point"])) * np.float32(q["scale"])).astype(np.float32)
    return value


def run(data: bytes, feeds: dict[str, np.ndarray], arena_bytes: int) -> list[np.ndarray]:
    """Run a batch of ``feeds`` (keyed by signature input name) in TFLite Micro, in a child process.

    Same contract as ``Session.run``: float feeds for int8 inputs are
    quantized, int8 outputs dequantized to float32, outputs in graph order.
    Raises RuntimeError with TFLM's last message if the child fails.
    """
    inputs, outputs = io_description(parse(data))
    missing = [d["name"] for d in inputs if d["name"] not in feeds]
    if missing:
        raise KeyError(f"no data for model input '{missing[0]}'")
    arrays = [_to_model_dtype(np.asarray(feeds[d["name"]]), d) for d in inputs]
    with tempfile.TemporaryDirectory() as tmp:
        model, feeds_path, out_path = Path(tmp) / "model.tflite", Path(tmp) / "feeds.npz", Path(tmp) / "out.npz"
        model.write_bytes(data)
        np.savez(feeds_path, **{f"input{k}": a for k, a in enumerate(arrays)})
        code, _, stderr = _child([str(model), "--run", str(int(arena_bytes)), str(feeds_path), str(out_path)])
        if code != 0 or not out_path.exists():
            raise RuntimeError(_last_error(code, stderr))
        with np.load(out_path) as saved:
            raw = [saved[f"output{k}"] for k in range(len(outputs))]
    return [_from_model_dtype(value, d) for value, d in zip(raw, outputs)]


def agreement(tflm: list[np.ndarray], litert: list[np.ndarray], data: bytes) -> dict[str, Any]:
    """How closely TFLM's outputs match LiteRT's on the same samples.

    ``max_abs_diff_lsb`` is per output in units of the output's quantization
    step (1 = one int8 step apart; float outputs report it in absolute terms
    under ``max_abs_diff``); ``top1_agreement`` compares the first output's
    argmax, which is what classification accuracy reads.
    """
    _, outputs = io_description(parse(data))
    facts: dict[str, Any] = {"samples": int(len(tflm[0])) if tflm else 0, "outputs": {}}
    for got, want, d in zip(tflm, litert, outputs):
        diff = float(np.max(np.abs(got.astype(np.float32) - want.astype(np.float32)))) if got.size else 0.0
        entry: dict[str, Any] = {"max_abs_diff": diff}
        if d["quantization"] is not None:
            entry["max_abs_diff_lsb"] = round(diff / d["quantization"]["scale"], 3)
        facts["outputs"][d["name"]] = entry
    if tflm and tflm[0].ndim >= 2:
        first_got, first_want = tflm[0].reshape(len(tflm[0]), -1), litert[0].reshape(len(litert[0]), -1)
        facts["top1_agreement"] = float(np.mean(first_got.argmax(1) == first_want.argmax(1)))
    return facts


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
            "Replace the op in the model with ops TFLite Micro has kernels for (edgekit already rewrites GELU "
            "for microcontrollers; other ops it cannot rewrite), or target a device with the full LiteRT runtime",
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
    """``MODEL``: print the measured arena as JSON. ``MODEL --run ARENA FEEDS.npz OUT.npz``: run samples."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # TFLM prints to stdout; keep our JSON line clean
    data = Path(argv[0]).read_bytes()
    try:
        if len(argv) == 5 and argv[1] == "--run":
            with np.load(argv[3]) as saved:
                arrays = [saved[f"input{k}"] for k in range(len(saved.files))]
            outputs = run_samples(data, int(argv[2]), arrays, len(arrays[0]) if arrays else 0)
            np.savez(argv[4], **{f"output{k}": o for k, o in enumerate(outputs)})
            return 0
        result = measure_arena(data)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
