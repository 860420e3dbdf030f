"""Latency estimates for a device you do not have at hand: a roofline over MACs and weight bytes.

The model (docs/bench.md shows how far it was off on measured models):

    compute_ms  = 2 · MACs / (gops · 1e9 · speedup[precision] · efficiency · threads/cores) · 1e3
    memory_ms   = weight_bytes / (mem_bandwidth_gbps · 1e9) · 1e3
    latency_ms  = max(compute_ms, memory_ms) + overhead_ms + nodes · node_ms

- ``gops`` is the profile's sustained fp32 GOP/s over all cores (one MAC = 2
  ops), ``mem_bandwidth_gbps`` its DRAM bandwidth. Weights are read once per
  inference; activations of edge-sized models are assumed to stay in cache.
- ``speedup[precision]`` (PRECISION_SPEEDUP) is what integer kernels gain over
  fp32 on ARM CPUs: int8 ×2 (XNNPACK/ORT pack 2× as many lanes per NEON
  register and use widening dot products); dynamic int8 ×1.5 (activations are
  quantized at run time); fp16 and int4 ×1 (CPU kernels dequantize to fp32 —
  they save memory traffic, not arithmetic).
- ``efficiency`` is the fraction of peak GEMM throughput real layers reach
  (convolutions, small matrices, im2col). Default RUNTIME_EFFICIENCY, measured
  on this repository's reference models; a ``host`` calibration may replace it.
- ``overhead_ms`` is the runtime's fixed per-call cost: DEFAULT_OVERHEAD_MS,
  or ``host["overhead_ms"]`` measured by benchmarking a near-empty model.
- ``nodes · node_ms`` (only when the graph's node count is given) is the
  runtime's dispatch cost per operator, which dominates small graphs made of
  many tiny ops (a small Transformer): DEFAULT_NODE_MS or ``host["node_ms"]``.

Torch is imported only inside ``count_macs``/``count_parameters``: this module
is imported by light code (the build manifest, the report).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.config import Device

METHOD = "roofline: max(compute, memory) + per-call overhead"
# Arithmetic speed-up of each precision over fp32 on CPU kernels (see module docstring).
PRECISION_SPEEDUP = {"fp32": 1.0, "fp16": 1.0, "int8": 2.0, "dynamic-int8": 1.5, "int4": 1.0}
# Bytes per weight as stored; int4 packs two weights per byte.
BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "dynamic-int8": 1.0, "int4": 0.5}
# Fraction of peak GEMM GOP/s that whole models reach in ONNX Runtime / LiteRT on
# small edge models (measured on the reference models in docs/bench.md).
RUNTIME_EFFICIENCY = 0.7
# Fixed cost of one inference call (Python binding, graph dispatch). Measured
# 0.01 ms on a desktop x86 core; ARM SBC cores are several times slower at this
# scalar code, so the default is a middle figure for edge CPUs.
DEFAULT_OVERHEAD_MS = 0.05
# Dispatch cost per graph node: measured 0.0002 ms on a desktop x86 core with
# ONNX Runtime; the default assumes an edge core ~5x slower at this scalar code.
DEFAULT_NODE_MS = 0.001


def count_macs(model: Any, example_inputs: tuple[Any, ...]) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``example_inputs``.

    Uses torch's FlopCounterMode, which counts matmul, linear, convolution,
    batched matmul and attention (2 FLOPs per MAC); elementwise ops are free
    in this count, as they are next to the matrix work of real models.
    The count is for the batch in ``example_inputs``: pass batch-1 inputs for
    per-inference figures.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # nn.MultiheadAttention / TransformerEncoderLayer in eval mode take a fused
    # "fast path" kernel the counter cannot see into; count the unfused ops.
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha else None
    try:
        if mha:
            mha.set_fastpath_enabled(False)
        with torch.no_grad(), counter:
            model(*example_inputs)
    finally:
        if mha:
            mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops()) // 2


def count_parameters(model: Any) -> int:
    """Number of parameters (weights and biases) of a torch module."""
    return int(sum(p.numel() for p in model.parameters()))


def weight_bytes(parameters: int, precision: str) -> int:
    """Bytes the weights take at ``precision`` (scales and zero points ignored)."""
    return int(math.ceil(parameters * _lookup(BYTES_PER_WEIGHT, precision)))


def _lookup(table: dict[str, float], precision: str) -> float:
    try:
        return table[precision]
    except KeyError:
        from edgekit.errors import ConfigError

        raise ConfigError(f"unknown precision '{precision}'", f"Use one of: {', '.join(table)}") from None


def compute_precision(precision: str, config: dict[str, Any]) -> str:
    """The precision an artifact computes in: its own, or fp32 when its recipe's config says the
    compute is float (weight-only int8 / int4: weights are dequantized, no integer kernel runs)."""
    return "fp32" if str(config.get("compute", "")).startswith("float") else precision


def estimate_latency(
    macs: int,
    weight_bytes: int,
    precision: str,
    device: Device,
    host: dict[str, Any] | None = None,
    *,
    threads: int | None = None,
    nodes: int | None = None,
) -> dict[str, Any]:
    """Estimated latency of one inference on ``device`` (see the module docstring for the model).

    ``host`` is an optional calibration measured on a real machine (e.g. a
    bench of a near-empty model): ``efficiency``, ``overhead_ms`` and
    ``node_ms`` replace RUNTIME_EFFICIENCY, DEFAULT_OVERHEAD_MS and
    DEFAULT_NODE_MS. ``nodes`` is the artifact's operator count (e.g. from
    ``edgekit inspect``); without it the per-node term is left out. ``threads`` defaults
    to all of the device's cores. A device without a ``gops`` figure gets
    ``latency_ms: None`` and a ``note`` saying why, never a made-up number.

    Returns ``{"latency_ms", "compute_ms", "memory_ms", "overhead_ms", "method",
    "label": "estimate", "precision", "threads", "assumptions"}``.
    """
    host = host or {}
    speedup = _lookup(PRECISION_SPEEDUP, precision)
    cores = device.cores
    used = max(1, min(threads or cores, cores))
    efficiency = float(host.get("efficiency", RUNTIME_EFFICIENCY))
    result: dict[str, Any] = {
        "latency_ms": None,
        "compute_ms": None,
        "memory_ms": None,
        "overhead_ms": None,
        "method": METHOD,
        "label": "estimate",
        "precision": precision,
        "threads": used,
        "assumptions": {"speedup": speedup, "efficiency": efficiency, "gops": device.gops,
                        "mem_bandwidth_gbps": device.mem_bandwidth_gbps, "nodes": nodes},
    }
    if device.gops is None:
        result["note"] = "the profile's [device] has no gops figure; add gops (and mem_bandwidth_gbps) to estimate"
        return result
    effective_gops = device.gops * used / cores * speedup * efficiency
    compute_ms = 2.0 * macs / (effective_gops * 1e9) * 1e3
    memory_ms = weight_bytes / (device.mem_bandwidth_gbps * 1e9) * 1e3 if device.mem_bandwidth_gbps else 0.0
    overhead_ms = float(host.get("overhead_ms", DEFAULT_OVERHEAD_MS))
    if nodes:
        overhead_ms += nodes * float(host.get("node_ms", DEFAULT_NODE_MS))
    result.update(
        latency_ms=_significant(max(compute_ms, memory_ms) + overhead_ms),
        compute_ms=_significant(compute_ms),
        memory_ms=_significant(memory_ms),
        overhead_ms=_significant(overhead_ms),
        bound="compute" if compute_ms >= memory_ms else "memory",
    )
    if not device.mem_bandwidth_gbps:
        result["note"] = "no mem_bandwidth_gbps in the profile: memory time taken as 0"
    return result


def _significant(value: float, digits: int = 6) -> float:
    """Round to significant digits: sub-microsecond and multi-second figures keep their precision."""
    return float(f"{value:.{digits}g}")


# ------------------------------------------------------------------- host probe

_PROBE = r"""
import json, sys, time
import numpy as np
n, seconds = int(sys.argv[1]), float(sys.argv[2])
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
best, end = float("inf"), time.perf_counter() + seconds
while time.perf_counter() < end:
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
src = np.ones(16 * 2**20 // 4, dtype=np.float32); dst = np.empty_like(src)
copy = float("inf")
for _ in range(10):
    t = time.perf_counter(); np.copyto(dst, src); copy = min(copy, time.perf_counter() - t)
print(json.dumps({"gops": 2 * n**3 / best / 1e9, "mem_bandwidth_gbps": 2 * src.nbytes / copy / 1e9}))
"""


def probe_host(threads: int = 1, size: int = 512, seconds: float = 0.5) -> dict[str, Any]:
    """Measure this machine's fp32 GEMM GOP/s and copy bandwidth with numpy, on ``threads`` threads.

    Runs in a child interpreter so the BLAS thread count can be pinned (it is
    fixed at import). Returns ``{"gops", "mem_bandwidth_gbps", "threads",
    "probe_s"}``: the best of repeated ``size``² matmuls, and a 16 MiB copy
    (read + write bytes). Peak figures: see RUNTIME_EFFICIENCY for what models reach.
    """
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PROBE, str(size), str(seconds)],
                         capture_output=True, text=True, env=env, check=True)
    figures = json.loads(out.stdout)
    figures.update(threads=threads, probe_s=round(time.perf_counter() - start, 2))
    return figures
