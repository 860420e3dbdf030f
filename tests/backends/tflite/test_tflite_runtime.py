"""TFLite runtime: child-process isolation, batching, quantized I/O, timing, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends.tflite.runtime import open_session, runtime_version
from edgekit.errors import ArtifactError, DataError

# Tests run with --import-mode=importlib, which does not put this folder on sys.path;
# the shared tiny models live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
from tflite_testing_models import built, by_variant, case  # noqa: E402


@pytest.fixture(scope="module")
def fp32_cnn() -> Path:
    (artifact,) = built("cnn", "fp32")
    return artifact.path


def test_runtime_version_names_the_runtime() -> None:
    assert runtime_version().split()[0] in ("ai-edge-litert", "tflite-runtime", "tensorflow")


def test_runtime_module_imports_no_torch_or_converters() -> None:
    code = (
        "import sys, edgekit.backends.tflite.runtime, edgekit.backends.tflite.inspect; "
        "bad = [m for m in ('torch', 'litert_torch', 'ai_edge_quantizer', 'tensorflow') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_session_spec_and_batches(fp32_cnn: Path) -> None:
    with open_session(fp32_cnn, threads=1) as session:
        assert [(s.name, s.shape, s.dtype) for s in session.inputs] == [("image", (None, 1, 8, 8), "float32")]
        assert [(s.name, s.shape, s.dtype) for s in session.outputs] == [("logits", (None, 4), "float32")]
        x = case("cnn").test["image"]
        for batch in (1, 3, 32):
            (out,) = session.run({"image": x[:batch]})
            assert out.shape == (batch, 4) and out.dtype == np.float32
        single = np.concatenate([session.run({"image": x[i : i + 1]})[0] for i in range(5)])
        np.testing.assert_allclose(session.run({"image": x[:5]})[0], single, atol=1e-6)


@pytest.mark.slow
def test_time_runs_measures_inside_the_child(fp32_cnn: Path) -> None:
    with open_session(fp32_cnn) as session:
        times = session.time_runs({"image": case("cnn").test["image"][:1]}, runs=20, warmup=2)
    assert len(times) == 20 and all(t > 0 for t in times)
    assert np.median(times) < 0.05  # a 2-layer CNN: microseconds, not pipe round trips


@pytest.mark.slow
def test_int8_io_session_takes_and_returns_float() -> None:
    artifact = by_variant(built("cnn", "int8", io="int8", kind="microcontroller"))["pt2e-static"]
    with open_session(artifact.path) as session:
        assert session.inputs[0].dtype == "float32"  # what run() accepts; the tensor itself is int8
        q = session.quantization["image"]
        assert q["dtype"] == "int8" and q == {**artifact.details["io_quantization"]["inputs"]["image"]}
        (out,) = session.run({"image": case("cnn").test["image"][:4]})
    assert out.dtype == np.float32 and out.shape == (4, 4)


@pytest.mark.slow
def test_memory_is_that_of_the_process_running_the_model(fp32_cnn: Path) -> None:
    from edgekit.validate import peak_rss_mb

    with open_session(fp32_cnn) as session:
        session.run({"image": np.zeros((1, 1, 8, 8), np.float32)})
        child = peak_rss_mb(session)
        # the LiteRT child holds the model; this pytest process (torch and all) is far bigger and is not it
        assert 0 < child == session.peak_rss_mb() < peak_rss_mb()


@pytest.mark.slow
def test_missing_or_misshapen_input_is_a_data_error(fp32_cnn: Path) -> None:
    with open_session(fp32_cnn) as session:
        with pytest.raises(DataError, match="no data for model input 'image'"):
            session.run({"x": np.zeros((1, 1, 8, 8), np.float32)})
        with pytest.raises(DataError, match="LiteRT rejected the inputs"):
            session.run({"image": np.zeros((2, 1, 7, 8), np.float32)})
        (out,) = session.run({"image": np.zeros((1, 1, 8, 8), np.float32)})  # still usable afterwards
        assert out.shape == (1, 4)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "flipped"])
def test_corrupt_file_is_an_artifact_error_and_we_survive(tmp_path: Path, fp32_cnn: Path, damage: str) -> None:
    data = fp32_cnn.read_bytes()
    rng = np.random.default_rng(0)
    if damage == "truncated":
        bad = data[: len(data) // 3]
    elif damage == "random":
        bad = rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    elif damage == "empty":
        bad = b""
    else:  # keep the header, scramble the body
        body = bytearray(data)
        for i in rng.integers(64, len(body), size=300):
            body[i] = int(rng.integers(0, 256))
        bad = bytes(body)
    path = tmp_path / f"{damage}.tflite"
    path.write_bytes(bad)
    try:
        session = open_session(path)
    except ArtifactError as exc:
        assert path.name in str(exc)
    else:  # a scrambled body can still parse; then running it must fail cleanly or give some output
        with session:
            try:
                session.run({"image": np.zeros((1, 1, 8, 8), np.float32)})
            except (ArtifactError, DataError):
                pass
    # the damaged file ran in a child process: this process still opens and runs a good model
    with open_session(fp32_cnn) as good:
        assert good.run({"image": np.zeros((1, 1, 8, 8), np.float32)})[0].shape == (1, 4)


@pytest.mark.slow
def test_crashed_interpreter_becomes_an_artifact_error(fp32_cnn: Path) -> None:
    session = open_session(fp32_cnn)
    os.kill(session._proc.pid, signal.SIGSEGV)  # what a native crash on a hostile model looks like
    session._proc.wait(timeout=10)
    with pytest.raises(ArtifactError, match="crashed or hung while running.*signal 11"):
        session.run({"image": np.zeros((1, 1, 8, 8), np.float32)})
    session.close()


def test_missing_file_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        open_session(tmp_path / "nope.tflite")
