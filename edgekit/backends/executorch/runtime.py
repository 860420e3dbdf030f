"""Run ``.pte`` programs with ExecuTorch's runtime (``executorch.runtime``, XNNPACK linked in).

The Python binding takes and returns torch tensors, so this module imports
torch (the ``executorch`` package depends on it; the ``executorch`` extra
installs both on a device); it imports no converter. Both are imported with
the module, so ``bench`` counts their cost as the runtime's import, not as
the model's cold start or memory.
A program accepts 1..N samples, N being the batch its memory was planned
for (read from the method's metadata); sessions feed larger inputs in chunks
of N (``edgekit.batching``), so they take any number of samples.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from executorch.extension.pybindings import portable_lib
from executorch.runtime import Runtime

from edgekit.backends import TensorSpec
from edgekit.backends.executorch.methods import FIXED_BATCH, INPUT_NAMES, OUTPUT_NAMES, SCALAR_TYPES
from edgekit.batching import run_in_chunks
from edgekit.errors import ArtifactError


def runtime_version() -> str:
    try:
        return f"executorch {importlib.metadata.version('executorch')}"
    except importlib.metadata.PackageNotFoundError:
        return "executorch (version unknown)"


def _spec(name: str, info: Any) -> TensorSpec:
    code = int(info.dtype())
    if code not in SCALAR_TYPES:
        raise ArtifactError(f"{name} has a tensor type edgekit cannot feed (ScalarType {code})",
                            "Export the model with float or integer inputs and outputs")
    return TensorSpec(name, tuple(int(d) for d in info.sizes()), SCALAR_TYPES[code])


class ExecuTorchSession:
    """A loaded ``.pte`` behind the Session contract (float or integer numpy in, numpy out)."""

    emulated = False
    delegate = "XNNPACK (ExecuTorch delegate)"

    def __init__(self, path: Path, threads: int = 1) -> None:
        runtime = Runtime.get()
        # The XNNPACK threadpool is process-wide: set it before loading, as validate and bench time one thread.
        portable_lib._unsafe_reset_threadpool(max(1, threads))
        try:
            program = runtime.load_program(str(path))
            self._method = program.load_method("forward")
            names = io_names(program, meta_counts(self._method))
            fixed = FIXED_BATCH in program.method_names and int(program.load_method(FIXED_BATCH).execute([])[0]) > 0
        except Exception as exc:  # the binding raises RuntimeError / ValueError for bad programs
            raise ArtifactError(f"ExecuTorch cannot load {path.name}: {str(exc)[:200]}",
                                "Check the file is a complete .pte made by a compatible ExecuTorch (rebuild it)") from None
        meta = self._method.metadata
        inputs = [_spec(f"input_{i}", meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
        outputs = [_spec(f"output_{i}", meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]
        self._capacity = inputs[0].shape[0] if inputs and inputs[0].shape else 1
        self.fixed_batch = self._capacity if fixed else None
        self.inputs = [TensorSpec(n, (self.fixed_batch, *s.shape[1:]), s.dtype) for n, s in zip(names[0], inputs)]
        self.outputs = [TensorSpec(n, (self.fixed_batch, *s.shape[1:]), s.dtype) for n, s in zip(names[1], outputs)]

    def _run_chunk(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(feeds[s.name], dtype=s.dtype)) for s in self.inputs]
        outputs = self._method.execute(tensors)
        return [o.detach().numpy() if hasattr(o, "detach") else np.asarray(o) for o in outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise ArtifactError(f"missing input(s) {', '.join(missing)}", f"Give {[s.name for s in self.inputs]}")
        count = len(next(iter(feeds.values())))
        if count <= self._capacity and (self.fixed_batch is None or count == self.fixed_batch):
            return self._run_chunk(feeds)
        return run_in_chunks(self._run_chunk, feeds, self._capacity)  # pads the last chunk of a fixed batch

    def close(self) -> None:
        self._method = None


def meta_counts(method: Any) -> tuple[int, int]:
    meta = method.metadata
    return meta.num_inputs(), meta.num_outputs()


def io_names(program: Any, counts: tuple[int, int]) -> tuple[list[str], list[str]]:
    """Input and output names from the program's name methods, else ``input_<i>`` / ``output_<i>``."""
    found = []
    for method, count, prefix in ((INPUT_NAMES, counts[0], "input"), (OUTPUT_NAMES, counts[1], "output")):
        names: list[str] = []
        if method in program.method_names:
            names = [str(n) for n in program.load_method(method).execute([])]
        found.append(names if len(names) == count else [f"{prefix}_{i}" for i in range(count)])
    return found[0], found[1]


def open_session(path: Path, threads: int = 1) -> ExecuTorchSession:
    return ExecuTorchSession(path, threads)
