"""Run .tflite artifacts in the LiteRT interpreter, isolated in a child process.

The interpreter is native code that trusts the flatbuffer it is given: a
damaged or hostile .tflite can crash it. So the interpreter never runs in
this process. ``open_session`` starts ``python -m edgekit.backends.tflite._worker``
and talks to it over pipes; if the child dies, the session raises
ArtifactError and the CLI lives on.

Runtime choice (in the child): ai-edge-litert, else tflite-runtime, else
TensorFlow's ``tf.lite``. XNNPACK, the interpreter's default CPU delegate,
runs with ``num_threads=threads``.

Batches: edgekit's .tflite files have a fixed batch (1, or the batch a
fixed-batch source model was exported at). The session accepts any number of
samples and feeds them in blocks of that batch inside the child, padding the
last block and dropping the padded rows (see ``_worker.Runner``), so one pipe
round trip serves the whole batch. Use ``time_runs`` for latency: it times
runs inside the child, without pipe overhead.

Build-time searches use two more requests: ``delegation`` (which ops the
XNNPACK delegate took, for coverage) and ``load`` (run another candidate in
the same child, so a search of many rounds does not start a process per
round).

This module imports only the standard library and numpy (never torch, a
converter, or even the interpreter itself).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends import TensorSpec
from edgekit.backends.tflite import _worker
from edgekit.errors import ArtifactError, BackendUnavailableError, DataError

_RUNTIMES = (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"), ("tensorflow", "tensorflow"))
# Loading a model should take well under this; a hung child is treated as a crash.
LOAD_TIMEOUT_S = 120.0
# One request (a whole batch, or a timing loop) may take long on a big model, but a
# hostile model that never returns (e.g. an endless WHILE) must not hang the CLI.
REQUEST_TIMEOUT_S = 1800.0
# Where the edgekit package lives, so the child imports the same copy as we do.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])


def _available_runtime() -> tuple[str, str]:
    for module, dist in _RUNTIMES:
        if importlib.util.find_spec(module) is not None:
            return module, dist
    raise BackendUnavailableError(
        "no TFLite runtime is installed (looked for ai-edge-litert, tflite-runtime and tensorflow)",
        'Install one with: pip install "edgekit[runtime]"',
    )


def runtime_version() -> str:
    """``"<distribution> <version>"`` of the TFLite runtime sessions will use."""
    _, dist = _available_runtime()
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{dist} (version unknown)"


class TfliteSession:
    """A .tflite model loaded in a child process behind edgekit's ``Session`` contract.

    ``inputs``/``outputs`` are in graph order (the order of the torch model's
    arguments and returned values), named after the model's signature. Their
    ``dtype`` is what ``run`` accepts and returns: float32 for int8-quantized
    tensors, which the session quantizes/dequantizes with the tensor's scale and
    zero point (see ``quantization``). The batch dimension is reported as
    ``None`` because the session runs any batch size.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"artifact not found: {self.path}", "Check the path")
        _available_runtime()
        self._lock = threading.Lock()
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "edgekit.backends.tflite._worker", str(self.path.resolve()), str(int(threads))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._stderr)
        reply = self._receive("load", timeout=LOAD_TIMEOUT_S)
        if reply[0] != "ok":
            self.close()
            raise ArtifactError(
                f"LiteRT could not load {self.path.name}: {reply[2]}",
                "The file may be truncated or corrupt, or use an op or type this runtime does not support; "
                "rebuild it, or look at it with `edgekit inspect`",
            )
        self._describe(reply[1])

    def _describe(self, info: dict[str, Any]) -> None:
        self.runtime: str = info["runtime"]
        self.model_batch: int = info["batch"]
        self.quantization: dict[str, dict[str, Any]] = {}
        self.inputs = [self._spec(d) for d in info["inputs"]]
        self.outputs = [self._spec(d) for d in info["outputs"]]
        self.model_dtypes = {d["name"]: d["dtype"] for d in info["inputs"] + info["outputs"]}

    def _spec(self, d: dict[str, Any]) -> TensorSpec:
        dtype = d["dtype"]
        if d["scale"] and dtype in ("int8", "uint8", "int16"):
            self.quantization[d["name"]] = {"dtype": dtype, "scale": d["scale"], "zero_point": d["zero_point"]}
            dtype = "float32"
        shape = tuple(None if i == 0 or s < 0 else int(s) for i, s in enumerate(d["shape"]))
        return TensorSpec(d["name"], shape, dtype)

    # ------------------------------------------------------------------ protocol

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return lines[-1][:300] if lines else ""

    def _crashed(self, stage: str) -> ArtifactError:
        code = self._proc.poll()
        if code is None:
            self._proc.kill()
            code = self._proc.wait()
        how = f"signal {-code}" if code and code < 0 else f"exit code {code}"
        tail = self._stderr_tail()
        what = "could not load" if stage == "load" else "crashed or hung while running"
        return ArtifactError(
            f"the LiteRT interpreter {what} {self.path.name} (the runtime process died: {how}"
            + (f"; last message: {tail}" if tail else "")
            + ")",
            "The file is likely corrupt or not a TFLite model; rebuild it, or check it with `edgekit inspect`",
        )

    def _receive(self, stage: str, timeout: float | None = None) -> Any:
        assert self._proc.stdout is not None
        result: list[Any] = []

        def read() -> None:
            try:
                result.append(_worker.receive(self._proc.stdout))  # type: ignore[arg-type]
            except (EOFError, OSError, ValueError) as exc:
                result.append(exc)

        if timeout is None:
            read()
        else:
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            reader.join(timeout)
            if reader.is_alive():
                self._proc.kill()
                reader.join(5)
                raise self._crashed(stage)
        if not result or isinstance(result[0], Exception):
            raise self._crashed(stage)
        return result[0]

    def _request(self, message: tuple[Any, ...]) -> Any:
        with self._lock:
            if self._proc.poll() is not None:
                raise self._crashed("run")
            try:
                _worker.send(self._proc.stdin, message)  # type: ignore[arg-type]
            except (BrokenPipeError, OSError):
                raise self._crashed("run") from None
            reply = self._receive("run", timeout=REQUEST_TIMEOUT_S)
        if reply[0] == "ok":
            return reply[1]
        kind, text = reply[1], reply[2]
        if kind == "data":
            raise DataError(
                f"LiteRT rejected the inputs for {self.path.name}: {text}",
                "Check the data's shapes and dtypes match `edgekit inspect` of the artifact",
            )
        raise ArtifactError(f"LiteRT failed to run {self.path.name}: {text}", "Check the artifact with `edgekit inspect`; rebuild it if needed")

    # ------------------------------------------------------------------ public API

    def _feeds(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise DataError(
                f"no data for model input '{missing[0]}'",
                f"Give arrays named {', '.join(s.name for s in self.inputs)}",
            )
        return {s.name: np.asarray(feeds[s.name]) for s in self.inputs}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run a batch (any size); returns outputs in ``outputs`` order, dequantized to float32."""
        return list(self._request(("run", self._feeds(feeds))))

    def time_runs(self, feeds: dict[str, np.ndarray], runs: int, warmup: int = 3) -> list[float]:
        """Seconds per ``run`` of the batch as given, timed inside the runtime process."""
        return list(self._request(("time", self._feeds(feeds), int(runs), int(warmup))))

    def delegation(self) -> list[dict[str, Any]]:
        """Each op of the model: ``op``, ``delegated`` (XNNPACK took it), ``input_types``, ``output_types``."""
        return list(self._request(("delegation",)))

    def load(self, path: Path) -> None:
        """Replace the model in the same runtime process (searches that run many candidates)."""
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"artifact not found: {path}", "Check the path")
        self.path = path
        self._describe(self._request(("load", str(path.resolve()))))

    def peak_rss_mb(self) -> float | None:
        """Peak resident memory of the runtime process so far, in MiB (Linux ``VmHWM``); None where unknown."""
        try:
            status = Path(f"/proc/{self._proc.pid}/status").read_text(encoding="ascii")
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
        return None

    def close(self) -> None:
        """Stop the runtime process (also done when the session is garbage collected)."""
        self._finalizer()

    def __enter__(self) -> TfliteSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop(proc: subprocess.Popen[bytes], stderr: Any) -> None:
    if proc.poll() is None:
        try:
            _worker.send(proc.stdin, ("close",))  # type: ignore[arg-type]
            proc.wait(timeout=5)
        except Exception:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        stderr.close()
    except OSError:
        pass


def open_session(path: Path, threads: int = 1) -> TfliteSession:
    """Load ``path`` in LiteRT (in a child process) with ``threads`` CPU threads."""
    return TfliteSession(Path(path), threads=threads)

