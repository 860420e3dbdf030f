"""Child-process side of the TFLite runtime: owns one LiteRT interpreter.

Started by ``runtime.TfliteSession`` as ``python -m edgekit.backends.tflite._worker
MODEL_PATH THREADS``. It speaks length-prefixed pickles over its stdin and the
original stdout; native libraries that print are redirected to stderr first,
so nothing they write can corrupt the protocol. If the native interpreter
crashes on a damaged model, only this process dies; the parent turns the lost
pipe into an ArtifactError.

Requests are tuples: ``("run", feeds)``, ``("time", feeds, runs, warmup)``,
``("delegation",)`` (which ops XNNPACK took, see ``Runner.delegation``),
``("load", path)`` (replace the model, for build-time searches that run many
candidates) and ``("close",)``. Replies are ``("ok", payload)`` or
``("error", kind, message)`` where ``kind`` is "data" (bad inputs) or "runtime".

Imports only numpy and the runtime (never torch or converters).
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import time
from typing import Any, BinaryIO

import numpy as np

_HEADER = struct.Struct("<Q")


def send(stream: BinaryIO, message: Any) -> None:
    """Write one length-prefixed pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    """Read one length-prefixed pickle; EOFError when the other side is gone."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("pipe closed")
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError("pipe closed mid-message")
    return pickle.loads(payload)


def load_interpreter_class() -> tuple[Any, str]:
    """The first available TFLite interpreter: ai-edge-litert, tflite-runtime, then TensorFlow."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]

        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    import tensorflow as tf  # type: ignore[import-not-found]

    return tf.lite.Interpreter, "tensorflow"


class Runner:
    """One interpreter at the model's own batch size, driven sample-block by sample-block.

    Models from litert-torch have a fixed batch (edgekit exports at batch 1,
    or at the batch of a fixed-batch source model). A feed of any other size
    is run by looping over blocks of the model's batch inside this process,
    the last block padded by repeating its final sample (``edgekit.batching``)
    and the padded rows dropped, rather than ``resize_tensor_input``: resizing
    a fixed-shape graph breaks ops whose shapes were folded in (a flatten
    becomes RESHAPE to a constant [1, N]). Models with a dynamic batch (-1 in
    the shape signature) are resized once per new batch size instead.
    """

    def __init__(self, path: str, threads: int) -> None:
        interpreter_class, self.runtime = load_interpreter_class()
        # XNNPACK is LiteRT's default CPU delegate; num_threads applies to it.
        self.interpreter = interpreter_class(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inputs = self._ordered(self.interpreter.get_input_details(), "inputs")
        self.outputs = self._ordered(self.interpreter.get_output_details(), "outputs")
        self.dynamic_batch = all(
            len(d.get("shape_signature", d["shape"])) > 0 and int(d.get("shape_signature", d["shape"])[0]) == -1
            for d in self.inputs
        ) and bool(self.inputs)
        self.batch = int(self.inputs[0]["shape"][0]) if self.inputs and len(self.inputs[0]["shape"]) else 1

    def _ordered(self, details: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
        """Details in graph order, each with ``"public"``: its signature name (or tensor name)."""
        names: dict[int, str] = {}
        try:
            signatures = self.interpreter._get_full_signature_list()  # noqa: SLF001 - the only index-level view
            if signatures:
                first = next(iter(signatures.values()))
                names = {int(index): name for name, index in first[kind].items()}
        except Exception:  # older runtimes lack signatures: tensor names then
            names = {}
        return [{**d, "public": names.get(int(d["index"]), d["name"])} for d in details]

    def describe(self) -> dict[str, Any]:
        def spec(d: dict[str, Any]) -> dict[str, Any]:
            scale, zero = d.get("quantization", (0.0, 0))
            shape = [int(x) for x in d.get("shape_signature", d["shape"])]
            return {
                "name": d["public"],
                "shape": shape,
                "dtype": np.dtype(d["dtype"]).name,
                "scale": float(scale),
                "zero_point": int(zero),
            }

        return {
            "runtime": self.runtime,
            "inputs": [spec(d) for d in self.inputs],
            "outputs": [spec(d) for d in self.outputs],
            "batch": self.batch,
            "dynamic_batch": self.dynamic_batch,
        }

    def _prepare(self, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], int]:
        arrays = []
        total = None
        for d in self.inputs:
            if d["public"] not in feeds:
                raise KeyError(f"no data for model input '{d['public']}'")
            value = np.asarray(feeds[d["public"]])
            if value.ndim != len(d["shape"]):
                raise ValueError(f"input '{d['public']}' has shape {list(value.shape)}, the model expects {list(d['shape'])}")
            if total is None:
                total = int(value.shape[0])
            elif int(value.shape[0]) != total:
                raise ValueError("all inputs must have the same batch size")
            arrays.append(self._to_model_dtype(value, d))
        return arrays, int(total or 0)

    @staticmethod
    def _to_model_dtype(value: np.ndarray, d: dict[str, Any]) -> np.ndarray:
        dtype = np.dtype(d["dtype"])
        scale, zero = d.get("quantization", (0.0, 0))
        if scale and np.issubdtype(dtype, np.integer) and np.issubdtype(value.dtype, np.floating):
            info = np.iinfo(dtype)
            value = np.clip(np.round(value / scale) + zero, info.min, info.max)
        return np.ascontiguousarray(value, dtype=dtype)

    @staticmethod
    def _from_model_dtype(value: np.ndarray, d: dict[str, Any]) -> np.ndarray:
        scale, zero = d.get("quantization", (0.0, 0))
        if scale and np.issubdtype(value.dtype, np.integer):
            return ((value.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)
        return value

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        arrays, total = self._prepare(feeds)
        raw = self._execute(arrays, total)
        return [self._from_model_dtype(value, d) for value, d in zip(raw, self.outputs)]

    def _execute(self, arrays: list[np.ndarray], total: int) -> list[np.ndarray]:
        """Run prepared (model-dtype) arrays of batch ``total``; raw outputs in model dtypes."""
        interp = self.interpreter
        if self.dynamic_batch:
            if total != self.batch:
                for d, a in zip(self.inputs, arrays):
                    interp.resize_tensor_input(d["index"], list(a.shape))
                interp.allocate_tensors()
                self.batch = total
            block = total
        else:
            block = self.batch
        pieces: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for start in range(0, total, block):
            chunk = [a[start : start + block] for a in arrays]
            real = len(chunk[0]) if chunk else block
            if real < block:  # a fixed-batch model: pad the last block, drop the padded rows below
                chunk = [np.concatenate([c, np.repeat(c[-1:], block - real, axis=0)]) for c in chunk]
            for d, a in zip(self.inputs, chunk):
                interp.set_tensor(d["index"], a)
            interp.invoke()
            for i, d in enumerate(self.outputs):
                value = interp.get_tensor(d["index"])
                pieces[i].append(value[:real].copy() if value.ndim else value.copy())
        return [np.concatenate(p, axis=0) if p[0].ndim else p[0] for p in pieces]

    def delegation(self) -> list[dict[str, Any]]:
        """Each op of the main graph: name, whether XNNPACK took it, and its operand dtypes.

        The Python interpreter exposes the node list (original ops, then one
        DELEGATE node per partition) but not the execution plan. A partition
        is a convex subgraph from the DELEGATE node's inputs to its outputs,
        so walking back from its outputs through producers, stopping at its
        inputs, finds the ops it replaced; every other op runs as a built-in
        TFLite kernel.
        """
        details = self.interpreter._get_ops_details()  # noqa: SLF001 - the only per-node view
        ops = [d for d in details if d["op_name"] != "DELEGATE"]
        producer = {int(t): d["index"] for d in ops for t in d["outputs"]}
        by_index = {d["index"]: d for d in ops}
        delegated: set[int] = set()
        for node in (d for d in details if d["op_name"] == "DELEGATE"):
            stop = {int(t) for t in node["inputs"]}
            stack, seen = [int(t) for t in node["outputs"]], set()
            while stack:
                tensor = stack.pop()
                if tensor in stop or tensor in seen:
                    continue
                seen.add(tensor)
                index = producer.get(tensor)
                if index is None or index in delegated:
                    continue
                delegated.add(index)
                stack.extend(int(t) for t in by_index[index]["inputs"] if t >= 0)

        def names(types: Any) -> list[str]:
            return [np.dtype(t).name for t in types]

        return [{"index": int(d["index"]), "op": d["op_name"], "delegated": d["index"] in delegated,
                 "inputs": [int(t) for t in d["inputs"]], "input_types": names(d["operand_types"]),
                 "output_types": names(d["result_types"])} for d in ops]

    def time_runs(self, feeds: dict[str, np.ndarray], runs: int, warmup: int) -> list[float]:
        """Seconds per run of the whole batch. Inputs are converted to model dtypes once,
        outside the timed region, so quantizing float feeds does not count as model time."""
        arrays, total = self._prepare(feeds)
        for _ in range(max(warmup, 0)):
            self._execute(arrays, total)
        times = []
        for _ in range(max(runs, 1)):
            start = time.perf_counter()
            self._execute(arrays, total)
            times.append(time.perf_counter() - start)
        return times


def main(argv: list[str]) -> int:
    path, threads = argv[0], int(argv[1])
    # Keep the protocol on a private copy of stdout; anything native code prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    try:
        runner = Runner(path, threads)
    except Exception as exc:
        send(out, ("error", "load", f"{type(exc).__name__}: {exc}"))
        return 1
    send(out, ("ok", runner.describe()))
    while True:
        try:
            request = receive(inp)
        except EOFError:
            return 0
        kind = request[0]
        if kind == "close":
            send(out, ("ok", None))
            return 0
        try:
            if kind == "run":
                send(out, ("ok", runner.run(request[1])))
            elif kind == "time":
                send(out, ("ok", runner.time_runs(request[1], request[2], request[3])))
            elif kind == "delegation":
                send(out, ("ok", runner.delegation()))
            elif kind == "load":
                runner = Runner(request[1], threads)
                send(out, ("ok", runner.describe()))
            else:
                send(out, ("error", "runtime", f"unknown request {kind!r}"))
        except (KeyError, ValueError, TypeError) as exc:
            send(out, ("error", "data", str(exc).strip("'\"")))
        except Exception as exc:
            send(out, ("error", "runtime", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
