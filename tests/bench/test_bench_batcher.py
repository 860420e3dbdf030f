"""``edgekit bench --micro-batch``: the micro-batcher's figures next to direct batch-B calls, without torch."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit import bench as core
from edgekit.commands.bench import bench
from edgekit.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--runs", "5", "--warmup", "1"]
MICRO_KEYS = {"max_batch", "max_wait_ms", "clients", "requests", "samples_per_request", "latency_ms", "throughput",
              "batches", "mean_batch_size", "batch_sizes", "vs_direct"}

# Installed into every Python process the command starts (PYTHONPATH's sitecustomize): the CLI process and
# each measuring child. A heavy import fails as on a device without it; each process records what it loaded.
BLOCKER = textwrap.dedent(
    """
    import atexit, importlib.abc, os, sys
    HEAVY = {heavy!r}

    class Forbidden(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ImportError(f"{{name}} is not installed on this device")
            return None

    sys.meta_path.insert(0, Forbidden())

    @atexit.register
    def _report():
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(HEAVY))
        with open(os.path.join({report!r}, f"{{os.getpid()}}.txt"), "w") as handle:
            handle.write(" ".join(sys.argv[:2]) + "|" + ",".join(loaded))
    """
)
HEAVY = ("torch", "torchvision", "onnx", "onnxscript", "tensorflow", "coremltools", "litert_torch",
         "ai_edge_quantizer", "executorch")


def _invoke(*args: object):
    return CliRunner().invoke(bench, [str(a) for a in args], catch_exceptions=True)


def test_micro_batch_results_sit_next_to_the_direct_ones(tmp_path: Path, mlp_onnx: Path) -> None:
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    result = _invoke(mlp_onnx, "--batch", "1,4", "--micro-batch", "--max-wait", "5", "--json-out", out,
                     "--csv", table, *FAST)
    assert result.exit_code == 0, result.output
    assert "micro-batcher" in result.output and "×direct" in result.output
    results = json.loads(out.read_text())["results"]
    assert [r["batch"] for r in results] == [1, 4]
    for entry in results:
        assert {"latency_ms", "throughput", "memory", "cold_start_ms"} <= set(entry)  # direct figures unchanged
        micro = entry["micro_batch"]
        assert set(micro) == MICRO_KEYS
        assert micro["max_batch"] == micro["clients"] == entry["batch"] and micro["max_wait_ms"] == 5
        assert micro["requests"] == 5 * entry["batch"] and micro["throughput"]["samples_per_s"] > 0
        assert 1 <= micro["mean_batch_size"] <= entry["batch"]
        assert max(map(int, micro["batch_sizes"])) <= entry["batch"]
        assert sum(int(k) * n for k, n in micro["batch_sizes"].items()) == micro["requests"]
        assert micro["latency_ms"]["p99"] >= micro["latency_ms"]["p50"] > 0 and micro["vs_direct"] > 0
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert all(float(r["micro_batch_samples_per_s"]) > 0 and float(r["micro_batch_p50_ms"]) > 0 for r in rows)


def test_without_the_flag_nothing_changes(tmp_path: Path, mlp_onnx: Path) -> None:
    out = tmp_path / "r.json"
    result = _invoke(mlp_onnx, "--json-out", out, *FAST)
    assert result.exit_code == 0 and "micro-batcher" not in result.output
    document = json.loads(out.read_text())
    assert "micro_batch" not in document["results"][0]
    row = core.csv_rows(document)[0]
    assert list(row) == list(core.CSV_COLUMNS) and row["micro_batch_samples_per_s"] is None
    comparison = core.compare(document, document)
    assert not any(m["metric"].startswith("micro") for m in comparison["pairs"][0]["metrics"])


def test_compare_and_load_handle_micro_batch_documents(tmp_path: Path, mlp_onnx: Path) -> None:
    for name in ("a", "b"):
        result = _invoke(mlp_onnx, "--batch", "2", "--micro-batch", "--json-out", tmp_path / f"{name}.json", *FAST)
        assert result.exit_code == 0, result.output
    comparison = core.compare(core.load_document(tmp_path / "a.json"), core.load_document(tmp_path / "b.json"))
    metrics = {m["metric"]: m for m in comparison["pairs"][0]["metrics"]}
    assert metrics["micro-batch /s"]["higher_is_better"] and metrics["micro-batch /s"]["ratio"] > 0
    assert "p50 ms" in metrics and "throughput /s" in metrics  # the existing metrics are all still there
    printed = CliRunner().invoke(bench, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert printed.exit_code == 0 and "micro-batch /s" in printed.output


def test_measure_in_process_counts_only_the_timed_phase(mlp_onnx: Path) -> None:
    result = core.measure(core.BenchRequest(str(mlp_onnx), batch=3, runs=4, warmup=2, micro_batch=True,
                                            max_wait_ms=50))
    micro = result["micro_batch"]
    assert micro["requests"] == 12 and sum(int(k) * n for k, n in micro["batch_sizes"].items()) == 12
    assert micro["batches"] == sum(micro["batch_sizes"].values())


def test_bad_max_wait_is_refused(mlp_onnx: Path) -> None:
    result = _invoke(mlp_onnx, "--micro-batch", "--max-wait", "-1", *FAST)
    assert result.exit_code == 2 and "--max-wait" in result.output
    with pytest.raises(InputError, match="wait"):
        core.BenchRequest(str(mlp_onnx), micro_batch=True, max_wait_ms=-1.0)


def test_a_failing_session_fails_the_measurement_without_hanging() -> None:
    class Broken:
        def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            raise RuntimeError("runtime crashed")

    feeds = {"x": np.zeros((4, 3), np.float32)}
    with pytest.raises(RuntimeError, match="runtime crashed"):
        core.measure_micro_batch(Broken(), feeds, core.BenchRequest("m.onnx", batch=4, warmup=1), 3, None)
    with pytest.raises(RuntimeError, match="runtime crashed"):  # failing only after the warm-up
        core.measure_micro_batch(Broken(), feeds, core.BenchRequest("m.onnx", batch=4, warmup=0), 3, None)


def test_the_micro_batch_table_fits_80_columns() -> None:
    from rich.console import Console

    from edgekit.commands.bench import _compact, _print_micro_batch

    def entry(batch: int, per_s: float, micro_per_s: float) -> dict:
        return {"artifact": "digits-mobilenet.int8.pruned-s0.8.onnx", "threads": 4, "batch": batch,
                "throughput": {"samples_per_s": per_s},
                "micro_batch": {"throughput": {"samples_per_s": micro_per_s}, "vs_direct": micro_per_s / per_s,
                                "latency_ms": {"p50": 12.25, "p99": 140.5}, "mean_batch_size": 31.75,
                                "max_wait_ms": 2.0}}

    console = Console(width=80, record=True, color_system=None)
    _print_micro_batch(console, [entry(1, 1234.5, 987.6), entry(32, 48403.3, 20512.2)])
    table = console.export_text().split("direct/s: batch-B")[0]
    assert all(len(line) <= 80 for line in table.splitlines())
    for value in (_compact(48403.3), _compact(20512.2), "12.2", "140", "31.8", "mean bs"):
        assert value in table, value


def test_bench_micro_batch_runs_with_torch_blocked(tmp_path: Path, mlp_onnx: Path) -> None:
    site, report = tmp_path / "site", tmp_path / "report"
    site.mkdir()
    report.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(heavy=HEAVY, report=str(report)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "edgekit", "bench", str(mlp_onnx), "--batch", "1,4", "--micro-batch",
                           "--json-out", str(out), *FAST], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["micro_batch"]["max_batch"] for r in json.loads(out.read_text())["results"]] == [1, 4]
    processes = [path.read_text().split("|") for path in report.glob("*.txt")]
    children = [argv for argv, _ in processes if argv.startswith(str(ROOT / "edgekit" / "bench.py"))]
    assert len(children) == 2  # `python -m edgekit.bench` per batch size: the measuring children were blocked too
    assert all(loaded == "" for _, loaded in processes), processes
