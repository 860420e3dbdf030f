"""edgekit.estimate: MAC counting and the roofline latency model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.config import Device, load_profile
from edgekit.errors import ConfigError
from edgekit.estimate import METHOD, PRECISION_SPEEDUP, compute_precision, estimate_latency, weight_bytes

ROOT = Path(__file__).resolve().parents[2]


def _device(gops: float | None = 10.0, bandwidth: float | None = 1.0, cores: int = 4) -> Device:
    return Device(kind="sbc", arch="aarch64", cores=cores, ram_mb=1024, gops=gops, mem_bandwidth_gbps=bandwidth)


def test_count_macs_of_known_layers() -> None:
    import torch
    from edgekit.estimate import count_macs, count_parameters

    assert count_macs(torch.nn.Linear(64, 10), (torch.randn(1, 64),)) == 640
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, (torch.randn(1, 3, 16, 16),)) == 16 * 16 * 8 * 3 * 9
    assert count_parameters(torch.nn.Linear(64, 10)) == 650


def test_count_macs_sees_inside_fused_attention() -> None:
    import torch
    from edgekit.estimate import count_macs

    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True).eval()
    tokens = 10
    linear_macs = tokens * (4 * 32 * 32 + 2 * 32 * 64)  # q, k, v, out projections + feed-forward
    assert count_macs(layer, (torch.randn(1, tokens, 32),)) >= linear_macs
    assert torch.backends.mha.get_fastpath_enabled(), "the fast path setting is restored"


def test_roofline_compute_and_memory_bound() -> None:
    device = _device(gops=10.0, bandwidth=1.0, cores=4)
    compute = estimate_latency(10_000_000, 1000, "fp32", device, {"efficiency": 1.0, "overhead_ms": 0.0})
    assert compute["bound"] == "compute" and compute["compute_ms"] == pytest.approx(2.0)  # 2e7 ops / 1e10 per s
    assert compute["latency_ms"] == pytest.approx(2.0)
    memory = estimate_latency(1000, 4_000_000, "fp32", device, {"efficiency": 1.0, "overhead_ms": 0.0})
    assert memory["bound"] == "memory" and memory["latency_ms"] == pytest.approx(4.0)  # 4 MB at 1 GB/s
    for result in (compute, memory):
        assert result["label"] == "estimate" and result["method"] == METHOD == (
            "roofline: max(compute, memory) + per-call overhead")
        assert {"latency_ms", "compute_ms", "memory_ms"} <= set(result)


def test_int8_speedup_threads_and_overhead() -> None:
    device = _device()
    fp32 = estimate_latency(50_000_000, 100, "fp32", device)
    int8 = estimate_latency(50_000_000, 100, "int8", device)
    assert fp32["compute_ms"] / int8["compute_ms"] == pytest.approx(PRECISION_SPEEDUP["int8"], rel=1e-4)
    one = estimate_latency(50_000_000, 100, "fp32", device, threads=1)
    assert one["compute_ms"] == pytest.approx(4 * fp32["compute_ms"], rel=1e-4) and one["threads"] == 1
    assert fp32["latency_ms"] == pytest.approx(fp32["compute_ms"] + fp32["overhead_ms"], abs=1e-3)


def test_weight_only_artifacts_get_no_integer_speedup() -> None:
    # the recipes' own words: ONNX weight-only says "float", LiteRT's "float32: LiteRT dequantizes ..."
    assert compute_precision("int8", {"compute": "float"}) == "fp32"
    assert compute_precision("int4", {"compute": "float32: int4 weights are dequantized before each op"}) == "fp32"
    assert compute_precision("int8", {"compute": "int8 x int8 in FULLY_CONNECTED"}) == "int8"
    assert compute_precision("int8", {}) == "int8"


def test_missing_device_figures_give_no_number() -> None:
    result = estimate_latency(1000, 1000, "fp32", _device(gops=None))
    assert result["latency_ms"] is None and "gops" in result["note"]
    no_bandwidth = estimate_latency(1000, 1000, "fp32", _device(bandwidth=None))
    assert no_bandwidth["memory_ms"] == 0.0 and "mem_bandwidth_gbps" in no_bandwidth["note"]
    with pytest.raises(ConfigError, match="unknown precision 'int3'"):
        estimate_latency(1000, 1000, "int3", _device())


def test_shipped_profiles_all_estimate() -> None:
    for name in ("raspberry-pi-4", "raspberry-pi-5", "esp32-s3", "iphone-ios17"):
        result = estimate_latency(5_000_000, weight_bytes(100_000, "int8"), "int8", load_profile(name).device)
        assert result["latency_ms"] is not None and result["latency_ms"] > 0, name


def test_weight_bytes_per_precision() -> None:
    assert weight_bytes(1000, "fp32") == 4000 and weight_bytes(1000, "fp16") == 2000
    assert weight_bytes(1001, "int4") == 501


def test_importing_estimate_does_not_import_torch() -> None:
    code = "import sys, edgekit.estimate, edgekit.report, edgekit.machine, edgekit.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_probe_host_measures_this_machine() -> None:
    from edgekit.estimate import probe_host

    figures = probe_host(threads=1, size=128, seconds=0.05)
    assert figures["gops"] > 0.1 and figures["mem_bandwidth_gbps"] > 0.1 and figures["threads"] == 1


def test_per_node_dispatch_cost_only_when_nodes_are_known() -> None:
    device = _device()
    calibration = {"overhead_ms": 0.01, "node_ms": 0.001}
    without = estimate_latency(1000, 100, "fp32", device, calibration)
    with_nodes = estimate_latency(1000, 100, "fp32", device, calibration, nodes=200)
    assert with_nodes["overhead_ms"] == pytest.approx(0.01 + 0.2)
    assert with_nodes["latency_ms"] - without["latency_ms"] == pytest.approx(0.2, rel=1e-4)
    assert with_nodes["assumptions"]["nodes"] == 200
