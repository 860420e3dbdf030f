"""Run .onnx artifacts in ONNX Runtime (CPU). Imports onnxruntime only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekit.backends import TensorSpec
from edgekit.batching import fixed_batch_of, run_in_chunks
from edgekit.errors import ArtifactError, DataError

# ONNX Runtime's element-type strings → numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def runtime_version() -> str:
    return ort.__version__


def _spec(arg: ort.NodeArg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or ()))
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


class OnnxSession:
    """An onnxruntime InferenceSession behind edgekit's ``Session`` contract."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # quantized graphs log benign warnings
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(
                f"onnxruntime cannot load {path.name}: {first_line}",
                "Check the file is a complete .onnx model (rebuild it if it was truncated)",
            ) from None
        self.inputs = [_spec(a) for a in self._session.get_inputs()]
        self.outputs = [_spec(a) for a in self._session.get_outputs()]
        # Exported from a fixed-batch program: feed it chunks of exactly that many samples.
        self.fixed_batch = fixed_batch_of([s.shape for s in self.inputs])

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        prepared = {}
        for spec in self.inputs:
            if spec.name not in feeds:
                raise DataError(
                    f"no data for model input '{spec.name}'",
                    f"Give arrays named {', '.join(s.name for s in self.inputs)}",
                )
            prepared[spec.name] = np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype)
            _check_shape(spec, prepared[spec.name].shape, fixed_batch=self.fixed_batch is not None)
        if self.fixed_batch is not None and len(next(iter(prepared.values()))) != self.fixed_batch:
            return run_in_chunks(self._run, prepared, self.fixed_batch)
        return self._run(prepared)

    def _run(self, prepared: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            outputs = self._session.run(None, prepared)
        except Exception as exc:
            raise DataError(
                f"onnxruntime rejected the inputs: {' '.join(str(exc).split())}",  # its index and sizes are on line 2
                "Check the data's shapes and dtypes match `edgekit inspect` of the artifact",
            ) from None
        return [np.asarray(o) for o in outputs]

    def close(self) -> None:
        """Nothing to release beyond memory; present so every session can be closed alike."""


def _check_shape(spec: TensorSpec, shape: tuple[int, ...], fixed_batch: bool) -> None:
    """A DataError naming the input, the axis, its size and the size the model takes, before onnxruntime runs."""
    expected = ["batch" if d is None else str(d) for d in spec.shape]
    wanted = f"({', '.join(expected)})"
    if len(shape) != len(spec.shape):
        raise DataError(f"input '{spec.name}' has shape {tuple(shape)} ({len(shape)} axes); the model takes {wanted}",
                        "Reshape the data to the model's input shape (`edgekit inspect` shows it)")
    for axis, (got, want) in enumerate(zip(shape, spec.shape)):
        if want is not None and got != want and not (axis == 0 and fixed_batch):  # a fixed batch is fed in chunks
            raise DataError(f"input '{spec.name}' axis {axis} is {got}, but the model takes {want} "
                            f"(data shape {tuple(shape)}, model {wanted})",
                            "Reshape the data to the model's input shape (`edgekit inspect` shows it)")


def open_session(path: Path, threads: int = 1) -> OnnxSession:
    return OnnxSession(path, threads=threads)
