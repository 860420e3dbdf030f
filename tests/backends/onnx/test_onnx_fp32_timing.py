"""ONNX candidates are timed interleaved against the FP32 export, with the TFLite record's keys."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit import timing
from edgekit.backends.onnx import build as onnx_build
from edgekit.backends.onnx import fp32_timing

# Tests run with --import-mode=importlib, which does not put this folder on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from test_onnx_build import _job  # noqa: E402

RECORD_KEYS = set(timing.comparison({"latency_p50_ms": 1.0, "runs": 1, "round_p50_ms": [1.0]},
                                    {"latency_p50_ms": 1.0, "runs": 1, "round_p50_ms": [1.0]}, "-"))


def _matmul_model(path: Path, width: int = 64, layers: int = 4) -> dict[str, np.ndarray]:
    """A small MatMul+Relu stack written with onnx.helper (no torch); returns a batch-1 feed."""
    rng = np.random.default_rng(0)
    nodes, weights, name = [], [], "x"
    for i in range(layers):
        weights.append(numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", [name, f"w{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        name = f"r{i}"
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return {"x": rng.standard_normal((1, width)).astype(np.float32)}


def test_every_non_fp32_candidate_carries_the_tflite_record(tiny_cnn, tmp_path: Path) -> None:
    job, _, _ = _job(tiny_cnn, tmp_path, "fp16")
    (fp16,) = onnx_build.build(job)
    record = fp16.details["vs_fp32"]
    assert set(record) == RECORD_KEYS
    assert record["latency_vs_fp32"] > 0 and record["runs"] >= timing.ROUNDS * timing.MIN_RUNS
    assert "onnxruntime" in record["method"]
    # FP32 itself is the reference, never compared with itself.
    (fp32,) = onnx_build.build(_job(tiny_cnn, tmp_path, "fp32")[0])
    assert "vs_fp32" not in fp32.details


def test_a_model_timed_against_its_own_copy_is_about_as_fast(tmp_path: Path) -> None:
    feeds = _matmul_model(tmp_path / "a.onnx")
    shutil.copyfile(tmp_path / "a.onnx", tmp_path / "b.onnx")
    first, second = fp32_timing.interleaved([tmp_path / "a.onnx", tmp_path / "b.onnx"], feeds, rounds=10)
    assert len(first["round_p50_ms"]) == len(second["round_p50_ms"]) == 10
    ratio = fp32_timing.comparison(second, first)["latency_vs_fp32"]
    # Measured within 0.99-1.01 on the digits samples; the bound is loose because the test host is shared.
    assert 0.8 < ratio < 1.25


def test_a_timing_failure_is_recorded_not_raised(tiny_cnn, tmp_path: Path) -> None:
    job, _, _ = _job(tiny_cnn, tmp_path, "fp32")
    (fp32,) = onnx_build.build(job)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    candidate = onnx_build.Artifact(bad, "onnx", "int8", "broken", details={})
    (record,) = onnx_build._time_against_fp32(job, fp32.path, [candidate])
    assert "bad.onnx" in record["error"]
    assert candidate.details == {}, "the candidate itself is not changed"
