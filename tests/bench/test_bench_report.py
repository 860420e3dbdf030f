"""edgekit.report.html: a self-contained report from a hand-made manifest and bench files."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from edgekit.bench import make_document
from edgekit.errors import ArtifactError, DataError
from edgekit.report import write_report

import matplotlib  # noqa: F401  (a dev dependency: a broken install must fail, not skip)


def _artifact(target: str, fmt: str, precision: str, size: int, accuracy: float, estimate_ms: float,
              host_ms: float | None, passed: bool) -> dict:
    drop = round(0.98 - accuracy, 4)
    return {
        "target": target, "format": fmt, "precision": precision, "variant": f"{precision}-recipe",
        "path": f"{target}/digits-cnn.{precision}.{fmt}", "sha256": f"sha-{target}-{fmt}-{precision}",
        "size_bytes": size,
        "metrics": {"accuracy": accuracy, "accuracy_drop": drop, "top1_agreement": 0.99, "cosine": 0.999,
                    "max_abs_error": 0.05, "sqnr_db": 30.1,
                    **({"latency_p50_ms": host_ms, "latency_p95_ms": host_ms * 1.2} if host_ms else {})},
        "estimate": {"latency_ms": estimate_ms, "label": "estimate",
                     "method": "roofline: max(compute, memory) + per-call overhead"},
        "budgets": {"max_size_mb": 0.1, "max_accuracy_drop": 0.01},
        "checks": [
            {"budget": "max_size_mb", "limit": 0.1, "value": size / 2**20,
             "status": "pass" if size / 2**20 <= 0.1 else "fail", "note": ""},
            {"budget": "max_accuracy_drop", "limit": 0.01, "value": drop, "status": "pass" if drop <= 0.01 else "fail",
             "note": ""},
        ],
        "passed": passed,
    }


def _manifest() -> dict:
    return {
        "schema_version": 1, "created_at": "2026-11-26T09:00:00Z",
        "model": {"name": "digits-cnn", "version": "1.0.0", "source_sha256": "ab" * 32},
        "toolkit": {"edgekit": "0.1.0", "versions": {"onnxruntime": "1.32.0"}},
        "data": {"file": "digits_holdout.npz", "labelled": True, "evaluation_size": 412},
        "reference": {"accuracy": 0.98},
        "targets": [
            {"name": "raspberry-pi-4", "status": "passed", "messages": []},
            {"name": "esp32-s3", "status": "failed", "messages": ["size budget missed <script>alert('x')</script>"]},
        ],
        "artifacts": [
            _artifact("raspberry-pi-4", "tflite", "int8", 23_000, 0.976, 0.41, 0.09, True),
            _artifact("raspberry-pi-4", "onnx", "int8", 30_000, 0.978, 0.41, 0.10, True),
            _artifact("raspberry-pi-4", "onnx", "fp32", 90_000, 0.980, 0.62, 0.05, True),
            _artifact("esp32-s3", "tflite", "int8", 140_000, 0.962, 38.0, None, False),
        ],
    }


def _bench_document() -> dict:
    machine = {"label": "pi4-lab-1", "cpu": "Cortex-A72", "cores": 4, "arch": "aarch64", "os": "Raspberry Pi OS"}
    result = {
        "artifact": "digits-cnn.int8.tflite", "sha256": "sha-raspberry-pi-4-tflite-int8", "format": "tflite",
        "runtime": "ai-edge-litert", "runtime_version": "2.3.0", "threads": 4, "batch": 1, "cold_start_ms": 21.0,
        "latency_ms": {"p50": 1.9, "p90": 2.2, "p99": 3.1, "mean": 2.0, "stdev": 0.2, "min": 1.7, "max": 3.4},
        "throughput": {"samples_per_s": 500.0}, "memory": {"peak_rss_mb": 48.0},
        "budgets": [{"target": "raspberry-pi-4", "budget": "max_latency_ms", "limit": 30.0, "value": 1.9,
                     "status": "pass", "note": "p50 latency, ms"}],
        "machine": machine,
    }
    return make_document([result], machine)


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest()))
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "pi4.json").write_text(json.dumps(_bench_document()))
    (tmp_path / "bench" / "notes.json").write_text('{"not": "a bench file"}')
    return tmp_path


def test_report_is_self_contained_and_labels_its_sources(build_dir: Path) -> None:
    path = write_report(build_dir)
    assert path == build_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    # No network: nothing fetched from anywhere, no scripts.
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3, "size vs accuracy, latency per precision, bench"
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    # Content: every target and artifact, the three latency sources, verdicts, bench figures.
    for text in ("digits-cnn 1.0.0", "raspberry-pi-4", "esp32-s3", "int8-recipe", "97.6%",
                 "drop 0.40 pp", "top-1 99.0%", "SQNR 30.1 dB", "estimate", "build host", "bench · pi4-lab-1 · 4t b1",
                 "max_size_mb", "Device benchmarks", "ai-edge-litert 2.3.0", "21 ms", "skipped notes.json"):
        assert text in page, text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page, "manifest text is escaped"


def test_report_without_bench_files(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest()))
    page = write_report(tmp_path).read_text()
    assert "Device benchmarks" not in page and page.count("data:image/png;base64,") == 2


def test_report_refuses_a_folder_without_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no manifest.json"):
        write_report(tmp_path)
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(DataError, match="not readable JSON"):
        write_report(tmp_path)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium_without_network(build_dir: Path) -> None:
    report = write_report(build_dir)
    shot = build_dir / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri()],
            capture_output=True, timeout=120, check=True,
        )
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000, "a rendered page with charts, not a blank one"
    keep = Path(tempfile.gettempdir()) / "edgekit-report-screenshot.png"
    shutil.copyfile(shot, keep)  # left for a human to look at


def test_bench_results_pair_by_hash_not_by_a_shared_file_name(build_dir: Path) -> None:
    page = write_report(build_dir).read_text()
    esp32 = page[page.index("esp32-s3 <span"):page.index("Device benchmarks")]
    assert "pi4-lab-1" not in esp32, "the Pi's measurement of its own int8.tflite is not the ESP32's file"
