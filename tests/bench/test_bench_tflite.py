"""Benchmarking .tflite artifacts through the LiteRT session (interpreter in its own process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.bench import BenchRequest, run_isolated
from edgekit.commands.bench import bench

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    import litert_torch
    import ai_edge_litert  # noqa: F401
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 8 * 8, 10)).eval()
    path = tmp_path_factory.mktemp("tflite") / "small.tflite"
    litert_torch.convert(model, (torch.randn(1, 1, 8, 8),)).export(str(path))
    return path


def test_tflite_is_timed_inside_the_runtime_process(small_tflite: Path) -> None:
    result = run_isolated(BenchRequest(str(small_tflite), threads=2, batch=3, runs=10, warmup=2))
    assert result["format"] == "tflite" and result["runtime"] == "ai-edge-litert"
    assert result["timed_by"] == "session.time_runs", "pipe round trips stay out of the latency"
    assert result["delegate"].startswith("XNNPACK")
    assert result["inputs"]["specs"][0]["shape"] == [3, 1, 8, 8]
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    memory = result["memory"]
    if memory["peak_rss_mb"] is not None:
        assert memory["process"] == "runtime child process"
        assert memory["peak_rss_mb"] >= memory["baseline_rss_mb"] > 10


def test_cli_benches_tflite_and_onnx_together(tmp_path: Path, small_tflite: Path, mlp_onnx: Path) -> None:
    out = tmp_path / "both.json"
    result = CliRunner().invoke(bench, [str(small_tflite), str(mlp_onnx), "--runs", "5", "--warmup", "1",
                                        "--json-out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    formats = [r["format"] for r in json.loads(out.read_text())["results"]]
    assert formats == ["tflite", "onnx"]


def test_corrupt_tflite_is_a_clear_error(tmp_path: Path) -> None:
    import ai_edge_litert  # noqa: F401
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    result = CliRunner().invoke(bench, [str(bad), "--runs", "3"])
    assert result.exception is not None and "bad.tflite" in str(result.exception)
    assert result.exception.exit_code == 2
