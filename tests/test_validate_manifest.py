"""``edgekit validate ARTIFACT --manifest manifest.json``: the build's budgets and FP32 accuracy, found by sha256."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest


def _linear_onnx(path: Path, seed: int) -> Path:
    """x[batch, 16] -> MatMul -> y[batch, 4], written with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(seed).standard_normal((16, 4)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "linear",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


@pytest.fixture
def model_and_data(tmp_path: Path) -> tuple[Path, Path]:
    """A linear ONNX model and labelled data whose labels are its own predictions (accuracy 1.0)."""
    import onnxruntime as ort

    model = _linear_onnx(tmp_path / "linear.onnx", seed=0)
    x = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    y = ort.InferenceSession(str(model)).run(None, {"x": x})[0].argmax(1)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    return model, tmp_path / "data.npz"


def test_budgets_and_reference_come_from_the_manifest_entry(model_and_data, manifest_for, cli) -> None:
    model, data = model_and_data
    manifest = manifest_for(model, {"lab-board": {"max_size_mb": 1.0, "max_accuracy_drop": 0.01}})
    result = cli("validate", model, "--data", data, "--manifest", manifest, "--runs", "3", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    checks = {c["budget"]: c for c in report["checks"]}
    assert report["target"] == "lab-board" and report["passed"]
    assert checks["max_accuracy_drop"]["value"] == 0.0  # against the manifest's reference accuracy of 1.0
    assert checks["max_size_mb"]["limit"] == 1.0
    from edgekit.artifact import sha256_file

    assert report["manifest"]["sha256"] == sha256_file(model) and report["manifest"]["path"] == "lab-board/linear.onnx"
    # the same budgets, stricter: the verdict follows the manifest (exit 1, report still printed)
    strict = manifest_for(model, {"lab-board": {"max_size_mb": 0.0001}})
    failed = cli("validate", model, "--data", data, "--manifest", strict, "--runs", "3", "--json")
    assert failed.code == 1 and json.loads(failed.out)["passed"] is False


def test_a_changed_artifact_is_refused(model_and_data, manifest_for, cli) -> None:
    model, data = model_and_data
    manifest = manifest_for(model, {"lab-board": {"max_size_mb": 1.0}})
    _linear_onnx(model, seed=7)  # other weights, same name: not the bytes the build validated
    result = cli("validate", model, "--data", data, "--manifest", manifest)
    assert result.code == 2 and "changed since the build" in result.err and "lab-board/linear.onnx" in result.err


def test_target_picks_among_several_entries(model_and_data, manifest_for, cli) -> None:
    model, data = model_and_data
    manifest = manifest_for(model, {"board-a": {"max_size_mb": 1.0}, "raspberry-pi-4": {"max_latency_ms": 1e-9}})
    ambiguous = cli("validate", model, "--data", data, "--manifest", manifest)
    assert ambiguous.code == 2 and "board-a, raspberry-pi-4" in ambiguous.err and "--target" in ambiguous.err
    wrong = cli("validate", model, "--data", data, "--manifest", manifest, "--target", "jetson-orin-nano")
    assert wrong.code == 2 and "not for jetson-orin-nano" in wrong.err
    picked = cli("validate", model, "--data", data, "--manifest", manifest, "-t", "raspberry-pi-4", "--runs", "3", "--json")
    report = json.loads(picked.out)
    latency = {c["budget"]: c for c in report["checks"]}["max_latency_ms"]
    assert report["target"] == "raspberry-pi-4" and "max_size_mb" not in {c["budget"] for c in report["checks"]}
    # a shipped profile names its arch: on this x86 host the Pi's latency budget is not judged
    import platform

    if platform.machine() != "aarch64":
        assert latency["status"] == "skipped" and report["measured_on_device"] is False


def test_validate_with_a_manifest_runs_without_torch(model_and_data, manifest_for) -> None:
    model, data = model_and_data
    manifest = manifest_for(model, {"lab-board": {"max_size_mb": 1.0, "max_accuracy_drop": 0.01}})
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        from edgekit.cli import main
        try:
            main(["validate", {str(model)!r}, "--data", {str(data)!r}, "--manifest", {str(manifest)!r}, "--runs", "3",
                  "--json"])
        except SystemExit as exc:
            assert not exc.code, exc.code
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["passed"] is True
