"""``edgekit bench`` and ``edgekit bench compare`` through click, plus the no-torch guarantee."""

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

from edgekit.commands.bench import bench
from edgekit.errors import ArtifactError, BudgetError, DataError, OutputError, TargetNotFoundError

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--runs", "5", "--warmup", "1"]


def _invoke(*args: str):
    return CliRunner().invoke(bench, [str(a) for a in args], catch_exceptions=True)


def _profile(tmp_path: Path, latency_ms: float, ram_mb: float) -> Path:
    path = tmp_path / "tiny-board.toml"
    path.write_text(textwrap.dedent(f"""
        name = "tiny-board"
        description = "test board"
        [device]
        kind = "sbc"
        arch = "aarch64"
        cores = 4
        ram_mb = 512
        [[artifacts]]
        format = "onnx"
        precision = "fp32"
        [budgets]
        max_latency_ms = {latency_ms}
        max_ram_mb = {ram_mb}
    """))
    return path


def test_bench_writes_json_with_the_documented_keys(tmp_path: Path, mlp_onnx: Path) -> None:
    out = tmp_path / "pi.json"
    result = _invoke(mlp_onnx, "--json-out", out, "--label", "pi4-lab-1", *FAST)
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["schema"] == "edgekit-bench" and document["machine"]["label"] == "pi4-lab-1"
    entry = document["results"][0]
    assert {"p50", "p90", "p99", "mean", "stdev", "min", "max"} <= set(entry["latency_ms"])
    assert entry["cold_start_ms"] > 0 and entry["machine"]["label"] == "pi4-lab-1"
    for key in ("cpu", "cores", "os", "arch", "python", "runtimes"):
        assert key in entry["machine"]
    assert "onnxruntime" in entry["machine"]["runtimes"]
    assert "mlp.onnx" in result.output


def test_sweeps_and_csv(tmp_path: Path, mlp_onnx: Path) -> None:
    out = tmp_path / "r.csv"
    result = _invoke(mlp_onnx, "--threads", "1,2", "--batch", "1,4", "--csv", out, *FAST)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["threads"], r["batch"]) for r in rows] == [("1", "1"), ("1", "4"), ("2", "1"), ("2", "4")]
    assert all(float(r["p99_ms"]) >= float(r["p50_ms"]) > 0 for r in rows)


def test_json_to_stdout_is_pure_json(mlp_onnx: Path) -> None:
    result = CliRunner().invoke(bench, [str(mlp_onnx), "--json", *FAST])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["results"][0]["artifact"] == "mlp.onnx"


def test_real_inputs_from_npz(tmp_path: Path, mlp_onnx: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((3, 16), np.float32), y=np.zeros(3))
    result = _invoke(mlp_onnx, "--data", tmp_path / "d.npz", "--json-out", tmp_path / "o.json", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o.json").read_text())["results"][0]["inputs"]["source"] == "d.npz"


def test_missed_budget_raises_after_writing_results(tmp_path: Path, mlp_onnx: Path) -> None:
    out = tmp_path / "r.json"
    result = _invoke(mlp_onnx, "--target", _profile(tmp_path, 1e-6, 4096), "--json-out", out, *FAST)
    assert isinstance(result.exception, BudgetError) and result.exception.exit_code == 1
    assert "max_latency_ms" in result.exception.problem
    verdicts = json.loads(out.read_text())["results"][0]["budgets"]
    assert [(v["budget"], v["status"]) for v in verdicts] == [("max_latency_ms", "fail"), ("max_ram_mb", "pass")]


def test_met_budget_exits_zero(tmp_path: Path, mlp_onnx: Path) -> None:
    result = _invoke(mlp_onnx, "--target", _profile(tmp_path, 10_000, 4096), *FAST)
    assert result.exit_code == 0, result.output
    assert "latency" in result.output and "pass" in result.output


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda d: d / "missing.onnx", ArtifactError, "artifact not found"),
        (lambda d: _file(d / "model.pt", b"x"), ArtifactError, "not a model format"),
        (lambda d: _file(d / "junk.onnx", b"junk"), ArtifactError, "cannot load junk.onnx"),
    ],
)
def test_bad_artifacts(tmp_path: Path, make, error: type, words: str) -> None:
    result = _invoke(make(tmp_path), *FAST)
    assert isinstance(result.exception, error) and words in result.exception.message


def test_bad_options(tmp_path: Path, mlp_onnx: Path) -> None:
    result = _invoke(mlp_onnx, "--target", "raspbery-pi-4", *FAST)
    assert isinstance(result.exception, TargetNotFoundError) and "Did you mean raspberry-pi-4" in result.exception.message
    result = _invoke(mlp_onnx, "--json-out", mlp_onnx, *FAST)
    assert isinstance(result.exception, OutputError)
    result = _invoke(mlp_onnx, "--data", tmp_path / "none.npz", *FAST)
    assert isinstance(result.exception, DataError)
    result = _invoke(mlp_onnx, "--threads", "0")
    assert result.exit_code == 2 and "numbers >= 1" in result.output


def test_compare_prints_ratios_and_writes_json(tmp_path: Path, mlp_onnx: Path) -> None:
    for name in ("a", "b"):
        assert _invoke(mlp_onnx, "--json-out", tmp_path / f"{name}.json", "--label", f"pi-{name}", *FAST).exit_code == 0
    result = CliRunner().invoke(bench, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                        "--json-out", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "pi-a" in result.output and "pi-b" in result.output and "B/A" in result.output
    comparison = json.loads((tmp_path / "c.json").read_text())
    p50 = next(m for m in comparison["pairs"][0]["metrics"] if m["metric"] == "p50 ms")
    assert p50["ratio"] == pytest.approx(p50["b"] / p50["a"], rel=1e-3)
    printed = CliRunner().invoke(bench, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json"])
    assert printed.exit_code == 0 and json.loads(printed.stdout) == comparison


def test_json_to_stdout_and_csv_to_stdout_are_refused_together(mlp_onnx: Path) -> None:
    result = CliRunner().invoke(bench, [str(mlp_onnx), "--json", "--csv", "-", *FAST])
    assert result.exit_code == 2 and "both print to stdout" in result.output


def test_compare_refuses_files_that_are_not_bench_results(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[]")
    result = CliRunner().invoke(bench, ["compare", str(tmp_path / "x.json"), str(tmp_path / "x.json")])
    assert isinstance(result.exception, DataError)


def test_bench_never_imports_torch_nor_runtimes_in_the_cli_process(tmp_path: Path, mlp_onnx: Path) -> None:
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any attempt to import torch now fails loudly
        from click.testing import CliRunner
        import edgekit.commands.bench as commands
        result = CliRunner().invoke(commands.bench, [{str(mlp_onnx)!r}, "--runs", "3", "--json-out", {str(tmp_path / "o.json")!r}])
        assert result.exit_code == 0, (result.output, result.exception)
        print(json.dumps({{"torch": sys.modules.get("torch") is not None,
                           "onnxruntime": "onnxruntime" in sys.modules}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torch": False, "onnxruntime": False}
    assert json.loads((tmp_path / "o.json").read_text())["results"][0]["latency_ms"]["p50"] > 0


def test_measuring_child_code_never_imports_torch(mlp_onnx: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        from edgekit.bench import BenchRequest, measure
        measure(BenchRequest({str(mlp_onnx)!r}, runs=3, warmup=1))
        print("torch" in sys.modules and sys.modules["torch"] is not None)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_full_cli_reports_bad_input_without_a_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    out = subprocess.run([sys.executable, "-m", "edgekit", "bench", str(junk)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "error: onnxruntime cannot load junk.onnx" in out.stderr


def test_missing_runtime_names_the_extra_to_install(tmp_path: Path, mlp_onnx: Path) -> None:
    blocker = tmp_path / "blocker" / "onnxruntime"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ModuleNotFoundError("No module named onnxruntime", name="onnxruntime")\n')
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    out = subprocess.run([sys.executable, "-m", "edgekit", "bench", str(mlp_onnx)], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "needs the Python package 'onnxruntime'" in out.stderr and 'pip install "edgekit[runtime]"' in out.stderr


def test_the_table_never_clips_a_number_at_80_columns() -> None:
    from rich.console import Console

    from edgekit.commands.bench import _compact, _fmt, _print_results

    result = {"artifact": "digits-mobilenet.int8.pruned-s0.8.tflite", "threads": 4, "batch": 32,
              "cold_start_ms": 1234.5, "latency_ms": {"p50": 6.61, "p90": 7.02, "p99": 12.9},
              "throughput": {"samples_per_s": 4840.3}, "memory": {"peak_rss_mb": 1843.2, "model_rss_mb": 1210.7}}
    document = {"machine": {"label": "pi4-lab-2", "runtimes": {}}, "results": [result, {**result, "threads": 1}]}
    console = Console(width=80, record=True, color_system=None)
    _print_results(console, document)
    text = console.export_text()
    table = text.split("times in ms")[0]
    assert all(len(line) <= 80 for line in table.splitlines())
    for value in (_fmt(1234.5), _fmt(6.61), _fmt(12.9), _compact(4840.3), _fmt(1843.2), _fmt(1210.7)):
        assert value in table, value  # whole, not cut to "4.84e+0" or "1,8…"
    assert "model" in table and "peak" in table  # every column kept
