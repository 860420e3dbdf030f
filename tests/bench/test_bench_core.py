"""edgekit.bench: inputs, timing, statistics, isolated measurement, budgets, compare."""

from __future__ import annotations

import json
import os
import platform
import stat
from pathlib import Path

import numpy as np
import pytest

from edgekit import bench
from edgekit.backends import TensorSpec, open_session
from edgekit.config import Budgets
from edgekit.errors import ArtifactError, DataError, InputError

FAST = dict(runs=5, warmup=1)


# ------------------------------------------------------------------- inputs


def test_random_inputs_follow_shapes_and_dtypes() -> None:
    specs = [TensorSpec("img", (None, 3, 4, 4), "float32"), TensorSpec("ids", (None, 5), "int64"),
             TensorSpec("q", (None, 2), "int8"), TensorSpec("mask", (None, 5), "bool")]
    feeds = bench.random_inputs(specs, batch=3, seed=1)
    assert feeds["img"].shape == (3, 3, 4, 4) and feeds["img"].dtype == np.float32
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].min() >= 0 and feeds["ids"].max() < bench.INTEGER_INPUT_HIGH
    assert feeds["q"].dtype == np.int8 and feeds["mask"].dtype == np.bool_
    again = bench.random_inputs(specs, batch=3, seed=1)
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds), "same seed, same inputs"


def test_fixed_batch_and_dynamic_dims_are_explained() -> None:
    with pytest.raises(DataError, match="fixed batch size of 1.*--batch 1"):
        bench.random_inputs([TensorSpec("x", (1, 8), "float32")], batch=4)
    with pytest.raises(DataError, match="dynamic dimension at axis 1.*--data"):
        bench.random_inputs([TensorSpec("x", (None, None), "float32")], batch=1)


def test_npz_inputs_bind_x_and_repeat_samples(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(2 * 16, dtype=np.float64).reshape(2, 16), y=np.array([0, 1]))
    feeds = bench.npz_inputs([TensorSpec("input_0", (None, 16), "float32")], batch=5, path=path)
    assert feeds["input_0"].shape == (5, 16)
    assert np.array_equal(feeds["input_0"][2], feeds["input_0"][0]), "fewer samples than the batch: repeated"


def test_npz_inputs_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    specs = [TensorSpec("x", (None, 16), "float32")]
    np.savez(tmp_path / "shape.npz", x=np.zeros((3, 15), np.float32))
    with pytest.raises(DataError, match=r"shape \(15,\) but the model expects \(16,\)"):
        bench.npz_inputs(specs, 1, tmp_path / "shape.npz")
    np.savez(tmp_path / "names.npz", a=np.zeros((3, 16)), b=np.zeros((3, 16)))
    with pytest.raises(DataError, match="holds 'a', 'b' but the model's inputs are 'x'"):
        bench.npz_inputs(specs, 1, tmp_path / "names.npz")
    np.savez(tmp_path / "dtype.npz", tokens=np.zeros((3, 8), np.float32), feats=np.zeros((3, 8), np.float32))
    with pytest.raises(DataError, match="takes int64 but the data is float32"):
        bench.npz_inputs([TensorSpec("tokens", (None, 8), "int64"), TensorSpec("feats", (None, 8), "float32")], 1,
                         tmp_path / "dtype.npz")


# ------------------------------------------------------------------- timing and statistics


def test_summarize_matches_numpy() -> None:
    times = [0.001 * i for i in range(1, 101)]  # 1..100 ms
    stats = bench.summarize(times)
    assert set(stats) == set(bench.STATISTICS)
    assert stats["p50"] == pytest.approx(50.5) and stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01) and stats["min"] == pytest.approx(1) and stats["max"] == pytest.approx(100)
    assert stats["stdev"] == pytest.approx(np.std(np.arange(1, 101), ddof=1), rel=1e-4)


def test_time_runs_on_a_real_session(mlp_onnx: Path) -> None:
    session = open_session(mlp_onnx)
    feeds = bench.random_inputs(session.inputs, 1)
    times = bench.time_runs(session, feeds, runs=7, warmup=2)
    assert len(times) == 7 and all(t > 0 for t in times)


class _SelfTimingSession:
    """A session that times itself, as the TFLite session does in its child process."""

    inputs = [TensorSpec("x", (None, 2), "float32")]
    outputs = [TensorSpec("y", (None, 2), "float32")]

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [feeds["x"]]

    def time_runs(self, feeds: dict[str, np.ndarray], runs: int, warmup: int) -> list[float]:
        self.calls.append((runs, warmup))
        return [0.002] * runs


def test_time_runs_prefers_the_sessions_own_timer() -> None:
    session = _SelfTimingSession()
    assert bench.time_runs(session, {"x": np.zeros((1, 2), np.float32)}, 4, 1) == [0.002] * 4
    assert session.calls == [(4, 1)]


# ------------------------------------------------------------------- measurement


def test_measure_in_process_reports_every_figure(mlp_onnx: Path) -> None:
    result = bench.measure(bench.BenchRequest(str(mlp_onnx), threads=1, batch=2, **FAST))
    assert result["format"] == "onnx" and result["runtime"] == "onnxruntime" and result["runs"] == 5
    assert result["cold_start_ms"] == pytest.approx(result["load_ms"] + result["first_inference_ms"], abs=0.01)
    assert set(result["latency_ms"]) == set(bench.STATISTICS)
    lat = result["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result["throughput"]["samples_per_s"] == pytest.approx(2 * result["throughput"]["inferences_per_s"], rel=1e-3)
    assert result["inputs"]["specs"] == [{"name": "x", "shape": [2, 16], "dtype": "float32"}]


def test_duration_budget_chooses_the_number_of_runs(mlp_onnx: Path) -> None:
    result = bench.measure(bench.BenchRequest(str(mlp_onnx), warmup=3, runs=1, duration_s=0.05))
    assert result["runs"] >= bench.MIN_RUNS_FOR_DURATION
    assert result["duration_s"] == 0.05


def test_isolated_run_measures_the_artifacts_own_memory(mlp_onnx: Path) -> None:
    result = bench.run_isolated(bench.BenchRequest(str(mlp_onnx), **FAST))
    memory = result["memory"]
    if memory["peak_rss_mb"] is None:
        pytest.skip("this OS reports no peak RSS")
    assert memory["process"] == "bench process"
    assert memory["peak_rss_mb"] >= memory["baseline_rss_mb"] > 10, "baseline = interpreter + numpy + runtime"
    assert memory["model_rss_mb"] == pytest.approx(memory["peak_rss_mb"] - memory["baseline_rss_mb"], abs=0.02)


def test_isolated_errors_come_back_typed(tmp_path: Path, mlp_onnx: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    with pytest.raises(ArtifactError, match="onnxruntime cannot load corrupt.onnx"):
        bench.run_isolated(bench.BenchRequest(str(corrupt), **FAST))
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3), np.float32))
    with pytest.raises(DataError, match="expects"):
        bench.run_isolated(bench.BenchRequest(str(mlp_onnx), data=str(tmp_path / "bad.npz"), **FAST))
    with pytest.raises(ArtifactError, match="not a model format edgekit knows"):
        bench.run_isolated(bench.BenchRequest(str(tmp_path / "bad.npz"), **FAST))


@pytest.mark.skipif(os.name != "posix", reason="needs a shell script as the interpreter")
def test_a_crashing_child_becomes_a_clear_error(tmp_path: Path, mlp_onnx: Path) -> None:
    crasher = tmp_path / "python-that-crashes"
    crasher.write_text("#!/bin/sh\necho 'Fatal Python error: Segmentation fault' >&2\nkill -SEGV $$\n")
    crasher.chmod(crasher.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(ArtifactError, match=r"killed by signal 11 while benchmarking mlp.onnx.*Segmentation fault"):
        bench.run_isolated(bench.BenchRequest(str(mlp_onnx), **FAST), python=str(crasher))


def test_bad_requests_are_input_errors() -> None:
    with pytest.raises(InputError):
        bench.BenchRequest("m.onnx", threads=0)
    with pytest.raises(InputError):
        bench.BenchRequest("m.onnx", duration_s=0)


def test_coreml_is_skipped_off_macos(tmp_path: Path, mlp_onnx: Path) -> None:
    package = tmp_path / "m.mlpackage"
    package.mkdir()
    results = bench.bench([package, mlp_onnx], [1], [1], machine={"label": "t"}, **FAST)
    if platform.system() == "Darwin":
        pytest.skip("Core ML runs here")
    assert results[0]["skipped"].startswith("Core ML runs only on Apple devices")
    assert results[1]["latency_ms"]["p50"] > 0 and results[1]["machine"] == {"label": "t"}


def test_sweeps_measure_every_combination(mlp_onnx: Path) -> None:
    results = bench.bench([mlp_onnx], [1, 2], [1, 3], machine={}, **FAST)
    assert [(r["threads"], r["batch"]) for r in results] == [(1, 1), (1, 3), (2, 1), (2, 3)]


# ------------------------------------------------------------------- budgets, documents, compare


def _result(artifact: str = "m.onnx", threads: int = 1, batch: int = 1, p50: float = 2.0, rss: float | None = 100.0) -> dict:
    return {"artifact": artifact, "threads": threads, "batch": batch, "cold_start_ms": 10.0,
            "latency_ms": {s: p50 for s in bench.STATISTICS}, "throughput": {"samples_per_s": 1000 / p50},
            "memory": {"peak_rss_mb": rss, "model_rss_mb": None if rss is None else rss - 50}}


def test_budgets_pass_fail_and_not_measured() -> None:
    checks = bench.check_budgets(_result(p50=2.0, rss=300.0), Budgets(max_latency_ms=3, max_ram_mb=256), "pi")
    assert [(c["budget"], c["status"]) for c in checks] == [("max_latency_ms", "pass"), ("max_ram_mb", "fail")]
    checks = bench.check_budgets(_result(rss=None), Budgets(max_ram_mb=256), "pi")
    assert checks[0]["status"] == "skipped" and checks[0]["note"] == "not measured on this OS"
    assert bench.check_budgets(_result(), Budgets(max_size_mb=1), "pi") == [], "only latency and RAM are bench's"


def test_documents_round_trip_and_refuse_other_json(tmp_path: Path) -> None:
    document = bench.make_document([_result()], {"label": "a"})
    path = tmp_path / "a.json"
    path.write_text(json.dumps(document))
    assert bench.load_document(path)["results"][0]["artifact"] == "m.onnx"
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(DataError, match="not an edgekit bench result"):
        bench.load_document(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="not a readable JSON"):
        bench.load_document(tmp_path / "broken.json")
    rows = bench.csv_rows(document)
    assert list(rows[0]) == list(bench.CSV_COLUMNS) and rows[0]["p50_ms"] == 2.0


def test_compare_pairs_same_artifacts_then_by_settings() -> None:
    a = bench.make_document([_result("m.onnx", p50=2.0), _result("old.onnx", threads=4, p50=8.0), _result("x.onnx", 2, 2)], {})
    b = bench.make_document([_result("m.onnx", p50=1.0), _result("new.onnx", threads=4, p50=4.0)], {})
    comparison = bench.compare(a, b)
    pairs = {(p["a"]["artifact"], p["b"]["artifact"]): p for p in comparison["pairs"]}
    assert set(pairs) == {("m.onnx", "m.onnx"), ("old.onnx", "new.onnx")}
    p50 = next(m for m in pairs[("m.onnx", "m.onnx")]["metrics"] if m["metric"] == "p50 ms")
    assert p50["ratio"] == 0.5
    throughput = next(m for m in pairs[("old.onnx", "new.onnx")]["metrics"] if m["metric"] == "throughput /s")
    assert throughput["ratio"] == 2.0 and throughput["higher_is_better"]
    assert comparison["only_in_a"] == [{"artifact": "x.onnx", "threads": 2, "batch": 2}]
    assert comparison["only_in_b"] == []
