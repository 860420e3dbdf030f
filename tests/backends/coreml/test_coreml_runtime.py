"""Core ML sessions and inspect: the Session contract, any batch size, clear errors, a light import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends import detect_format, open_session
from edgekit.backends.coreml import inspect as coreml_inspect
from edgekit.backends.coreml import runtime
from edgekit.backends.coreml.emulator.fp16 import round_to_fp16
from edgekit.errors import ArtifactError, DataError, UnsupportedModelError

sys.path.insert(0, str(Path(__file__).parent))
from coreml_testing import built, reference, sample, save_program  # noqa: E402

pytestmark = pytest.mark.slow


def test_session_contract_and_any_batch_size() -> None:
    artifact = built("cnn", "fp32")[0]
    session = open_session(artifact.path)
    assert detect_format(artifact.path) == "coreml"
    assert session.emulated is True
    assert [s.as_dict() for s in session.inputs] == [{"name": "x", "shape": [None, 1, 8, 8], "dtype": "float32"}]
    assert [s.as_dict() for s in session.outputs] == [{"name": "logits", "shape": [None, 10], "dtype": "float32"}]
    x = sample("cnn").feeds["x"]
    for n in (1, 5):
        (out,) = session.run({"x": x[:n]})
        np.testing.assert_allclose(out, reference("cnn", {"x": x[:n]})[0], atol=1e-4)
    # beyond the RangeDim bound (1024) the session runs chunks
    big = np.concatenate([x, x, x])[:1100]
    (out,) = session.run({"x": big})
    assert out.shape == (1100, 10)
    np.testing.assert_allclose(out[1080:], out[:20], atol=1e-5)  # BLAS blocking differs per chunk size


def test_fixed_batch_model_is_looped(tmp_path: Path) -> None:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    weight = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 6))], opset_version=ct.target.iOS17)
    def program(x):  # type: ignore[no-untyped-def]
        return mb.linear(x=x, weight=weight, name="y")

    path = save_program(program, tmp_path / "fixed.mlpackage", target="iOS17")
    session = open_session(path)
    x = np.random.default_rng(1).standard_normal((7, 6)).astype(np.float32)
    (out,) = session.run({"x": x})
    np.testing.assert_allclose(out, x @ weight.T, atol=1e-5)


def test_bad_feeds_are_data_errors() -> None:
    session = open_session(built("cnn", "fp32")[0].path)
    with pytest.raises(DataError, match="no data for model input 'x'"):
        session.run({"image": np.zeros((1, 1, 8, 8), np.float32)})
    with pytest.raises(DataError, match="shape"):
        session.run({"x": np.zeros((2, 1, 8, 9), np.float32)})
    tokens = open_session(built("tiny_tokens", "fp32")[0].path)
    feeds = dict(sample("tiny_tokens").feeds)
    feeds["input_ids"] = feeds["input_ids"].astype(np.float32)
    with pytest.raises(DataError, match="integer"):
        tokens.run(feeds)


def test_corrupt_packages_are_artifact_errors(tmp_path: Path) -> None:
    source = built("mlp", "fp32")[0].path
    broken = tmp_path / "broken.mlpackage"
    shutil.copytree(source, broken)
    weights = next(broken.rglob("weight.bin"))
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ArtifactError, match="weight"):
        open_session(broken)
    shutil.rmtree(broken)
    shutil.copytree(source, broken)
    next(broken.rglob("model.mlmodel")).write_bytes(b"\x12\x34not a model at all" * 10)
    with pytest.raises(ArtifactError, match="Core ML model"):
        open_session(broken)
    (broken / "Manifest.json").unlink()
    with pytest.raises(ArtifactError, match="Manifest.json"):
        open_session(broken)


def test_runtime_imports_neither_torch_nor_coremltools() -> None:
    path = built("transformer", "fp16", "iphone-ios18")[0].path
    probe = (
        "import sys, json, numpy as np\n"
        "from edgekit.backends import open_session\n"
        f"s = open_session(__import__('pathlib').Path({str(path)!r}))\n"
        "out = s.run({'x': np.zeros((2, 1, 8, 8), np.float32)})[0]\n"
        "print(json.dumps({'shape': list(out.shape), 'heavy': sorted(m for m in ('torch', 'coremltools') if m in sys.modules)}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"shape": [2, 10], "heavy": []}
    assert runtime.runtime_version().startswith("coreml-emulator")


def test_inspect_reads_the_package() -> None:
    artifact = built("mlp", "int8")[0]
    report = coreml_inspect.inspect(artifact.path)
    assert report["format"] == "coreml" and report["size_bytes"] == artifact.size_bytes
    assert report["inputs"] == [{"name": "x", "shape": [None, 1, 8, 8], "dtype": "float32"}]
    assert report["outputs"] == [{"name": "logits", "shape": [None, 10], "dtype": "float32"}]
    # iOS 17 programs carry the iOS 16 form of int8 weights
    assert report["ops"]["linear"] == 3 and report["ops"]["constexpr_affine_dequantize"] == 3
    assert report["quantized"] is True and report["weights"] == artifact.details["weights"]
    assert report["parameters"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    details = report["details"]
    assert details["deployment_target"] == "iOS 17" and details["compute_precision"] == "fp16"
    assert details["constexpr_ops"] == {"constexpr_affine_dequantize": 3}
    plain = coreml_inspect.inspect(built("mlp", "fp32")[0].path)
    assert plain["quantized"] is False and plain["details"]["compute_precision"] == "fp32"


def test_program_with_an_unknown_op_is_refused_at_open(tmp_path: Path) -> None:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 5))], opset_version=ct.target.iOS17)
    def program(x):  # type: ignore[no-untyped-def]
        return mb.topk(x=x, k=2, name="best")[0]

    path = save_program(program, tmp_path / "topk.mlpackage", target="iOS17")
    with pytest.raises(UnsupportedModelError, match="topk"):
        open_session(path)


def test_fast_fp16_rounding_equals_numpy_float16_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    every_half = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float64)
    finite = every_half[np.isfinite(every_half)]
    finite.sort()
    midpoints = ((finite[:-1] + finite[1:]) / 2).astype(np.float32)  # exact ties, representable in float32
    up, down = np.float32(np.inf), np.float32(-np.inf)
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.concatenate([
            *(rng.standard_normal(100_000).astype(np.float32) * np.float32(s) for s in (1e-9, 1e-6, 1e-4, 1e-2, 1, 300, 6e4, 1e5)),
            every_half.astype(np.float32), midpoints, np.nextafter(midpoints, up), np.nextafter(midpoints, down),
            np.array([np.nan, np.inf, -np.inf, 65519.99, 65520.0, -65520.0, 0.0, -0.0], np.float32),
        ])
        expected = values.astype(np.float16).astype(np.float32)
    got = round_to_fp16(values)
    same = (got.view(np.uint32) == expected.view(np.uint32)) | (np.isnan(got) & np.isnan(expected))
    assert same.all(), values[~same][:5]


def test_emulated_runs_use_the_sessions_blas_threads() -> None:
    """threads=1 (the default) holds BLAS to one thread during run, and restores the setting afterwards."""
    import threadpoolctl
    from edgekit.backends.coreml.emulator import ops

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"}

    seen: list[set[int]] = []
    original = ops.REGISTRY["linear"]

    def spying(ctx):  # type: ignore[no-untyped-def]
        seen.append(blas_threads())
        return original(ctx)

    session = open_session(built("mlp", "fp32")[0].path)
    before = blas_threads()
    ops.REGISTRY["linear"] = spying
    try:
        session.run({"x": sample("mlp").feeds["x"][:4]})
    finally:
        ops.REGISTRY["linear"] = original
    assert seen and all(threads <= {1} for threads in seen)
    assert blas_threads() == before


def test_core_ml_itself_runs_only_on_macos_unless_the_emulator_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a build records as ``emulated`` follows this: a macOS build validated with Core ML says False."""
    monkeypatch.delenv("EDGEKIT_COREML_EMULATOR", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert runtime.uses_core_ml() is False
    monkeypatch.setattr(sys, "platform", "darwin")
    assert runtime.uses_core_ml() is True
    monkeypatch.setenv("EDGEKIT_COREML_EMULATOR", "1")
    assert runtime.uses_core_ml() is False
