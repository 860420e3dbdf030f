"""What does the micro-batcher buy a gateway? Throughput and per-request latency at max batch 1 / 8 / 32.

    python benchmarks/bench_batcher.py                      # builds the MLPs below with onnx.helper
    python benchmarks/bench_batcher.py model.onnx ...       # or real artifacts (any format with a dynamic batch)
    python benchmarks/bench_batcher.py --clients 32 --max-wait 2 --rounds 7 --threads 1

For each max batch B, N concurrent client threads (N = B unless --clients is
given) each send single samples (one row, their own) one request at a time,
served three ways, interleaved round by round so machine noise hits all alike:

- locked:  every client calls ``session.run`` on its one sample, serialised by
           a lock (a gateway without batching: the baseline);
- micro:   every client calls ``MicroBatcher(session.run, max_batch=B,
           max_wait_ms)`` (edgekit.runtime.batcher);
- batch-B: one thread calls ``session.run`` on B samples at once (the ideal
           the micro-batcher approaches: no queueing, no thread hand-offs).

samples/s is the median over rounds; p50/p99 are per request (submit to
result; for batch-B, per call) pooled over rounds; ratios are medians of the
per-round ratios. torch is blocked from import for the whole run: everything
here needs numpy and the runtime only (onnx, to build the default models).
"""

from __future__ import annotations

import argparse
import importlib.abc
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class _NoTorch(importlib.abc.MetaPathFinder):
    """Makes ``import torch`` fail, so the run proves the runtime side never needs it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] == "torch":
            raise ImportError("torch is blocked in this benchmark: the device runtime must not need it")
        return None


sys.meta_path.insert(0, _NoTorch())

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.backends import open_session  # noqa: E402
from edgekit.bench import random_inputs  # noqa: E402
from edgekit.runtime.batcher import MicroBatcher  # noqa: E402

BATCHES = (1, 8, 32)
# Each mode of each round sends about this many seconds' worth of samples (at the one-sample call's speed),
# within these bounds: enough requests per client for percentiles, few enough for a ~1 min run.
ROUND_SECONDS = 0.1
MIN_SAMPLES, MAX_SAMPLES = 100, 1600
MIN_REQUESTS_PER_CLIENT = 5

Feeds = dict[str, np.ndarray]


def mlp(path: Path, widths: tuple[int, ...]) -> Path:
    """x[batch, widths[0]] → (MatMul → Relu)* → MatMul → y[batch, widths[-1]], seeded weights."""
    rng = np.random.default_rng(0)
    nodes, weights, name = [], {}, "x"
    for index, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        weights[f"w{index}"] = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        last = index == len(widths) - 2
        nodes.append(helper.make_node("MatMul", [name, f"w{index}"], ["y" if last else f"h{index}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"h{index}"], [f"r{index}"]))
            name = f"r{index}"
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", widths[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", widths[-1]])],
                              [numpy_helper.from_array(w, n) for n, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def drive(call: Callable[[Feeds], Any], samples: list[Feeds], requests: int) -> tuple[list[float], float]:
    """Each sample's own thread sends it ``requests`` times, all released together: (seconds per request, wall)."""
    times: list[list[float]] = [[] for _ in samples]
    marks: list[float] = []
    ready = threading.Barrier(len(samples), action=lambda: marks.append(time.perf_counter()))

    def client(index: int) -> None:
        sample, mine, clock = samples[index], times[index], time.perf_counter
        ready.wait()
        for _ in range(requests):
            start = clock()
            call(sample)
            mine.append(clock() - start)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(samples))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [t for mine in times for t in mine], time.perf_counter() - marks[0]


def one_round(session: Any, batcher: MicroBatcher, samples: list[Feeds], batch_feeds: Feeds,
              requests: int, calls: int) -> dict[str, tuple[list[float], float]]:
    """One round of the three modes, each as (latencies in s, samples per second)."""
    lock = threading.Lock()

    def locked(sample: Feeds) -> list[np.ndarray]:
        with lock:
            return session.run(sample)

    figures = {}
    for mode, call in (("locked", locked), ("micro", batcher)):
        latencies, wall = drive(call, samples, requests)
        figures[mode] = (latencies, len(latencies) / wall)
    batch = len(next(iter(batch_feeds.values())))
    latencies, wall = drive(session.run, [batch_feeds], calls)  # one thread: B samples per call
    figures["batch"] = (latencies, batch * calls / wall)
    return figures


def measure(session: Any, batch: int, clients: int, max_wait_ms: float, rounds: int) -> dict[str, Any]:
    """Figures of the three modes at max batch ``batch`` with ``clients`` client threads."""
    pool = random_inputs(session.inputs, max(batch, clients), seed=0)
    samples = [{k: v[i : i + 1] for k, v in pool.items()} for i in range(clients)]
    batch_feeds = {k: np.ascontiguousarray(v[:batch]) for k, v in pool.items()}
    start = time.perf_counter()
    for sample in samples[:5]:
        session.run(sample)
    one_sample_s = (time.perf_counter() - start) / len(samples[:5])
    per_round = int(min(MAX_SAMPLES, max(MIN_SAMPLES, ROUND_SECONDS / one_sample_s)))
    requests = max(MIN_REQUESTS_PER_CLIENT, per_round // clients)
    calls = max(MIN_REQUESTS_PER_CLIENT, per_round // batch)
    pooled: dict[str, list[float]] = {"locked": [], "micro": [], "batch": []}
    rates: dict[str, list[float]] = {"locked": [], "micro": [], "batch": []}
    with MicroBatcher(session.run, max_batch=batch, max_wait_ms=max_wait_ms) as batcher:
        one_round(session, batcher, samples, batch_feeds, MIN_REQUESTS_PER_CLIENT, MIN_REQUESTS_PER_CLIENT)  # warm-up
        before = batcher.stats()
        for _ in range(rounds):
            for mode, (latencies, rate) in one_round(session, batcher, samples, batch_feeds, requests, calls).items():
                pooled[mode] += latencies
                rates[mode].append(rate)
        after = batcher.stats()
    mean_batch = (after["samples"] - before["samples"]) / max(after["batches"] - before["batches"], 1)
    row: dict[str, Any] = {"max_batch": batch, "clients": clients, "mean_batch": mean_batch}
    for mode in pooled:
        p50, p99 = np.percentile(np.asarray(pooled[mode]) * 1e3, [50, 99])
        row[mode] = {"per_s": statistics.median(rates[mode]), "p50": float(p50), "p99": float(p99)}
    for mode in ("micro", "batch"):
        row[f"{mode}_vs_locked"] = statistics.median(m / b for m, b in zip(rates[mode], rates["locked"]))
    row["micro_vs_batch"] = statistics.median(m / b for m, b in zip(rates["micro"], rates["batch"]))
    return row


def print_rows(name: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{name}")
    print(f"{'B':>3s} {'clients':>7s}  {'mode':26s} {'samples/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'× locked':>9s} {'× batch-B':>9s}")
    print("-" * 88)
    for row in rows:
        b = row["max_batch"]
        lines = (
            ("direct 1-sample, locked", row["locked"], 1.0, None),
            (f"micro-batcher (mean bs {row['mean_batch']:.1f})", row["micro"], row["micro_vs_locked"],
             row["micro_vs_batch"]),
            (f"direct batch-{b} (ideal)", row["batch"], row["batch_vs_locked"], 1.0),
        )
        for index, (mode, figures, vs_locked, vs_batch) in enumerate(lines):
            lead = f"{b:>3d} {row['clients']:>7d}" if index == 0 else " " * 11
            print(f"{lead}  {mode:26s} {figures['per_s']:>10,.0f} {figures['p50']:>8.3f} {figures['p99']:>8.3f} "
                  f"{vs_locked:>8.2f}x {'' if vs_batch is None else f'{vs_batch:.2f}x':>9s}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="*", type=Path, help="artifacts to serve (default: built MLPs)")
    parser.add_argument("--clients", type=int, default=None, help="client threads (default: B for max batch B)")
    parser.add_argument("--max-wait", type=float, default=2.0, help="the micro-batcher's max wait, ms")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="the runtime's intra-op threads")
    args = parser.parse_args()
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()} {os.cpu_count()} cores; intra-op threads {args.threads}, "
          f"max wait {args.max_wait:g} ms, {args.rounds} interleaved rounds; torch blocked: "
          f"{'torch' not in sys.modules}")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = args.artifacts or [
            mlp(Path(tmp) / "mlp-256-512-512-10.onnx", (256, 512, 512, 10)),
            mlp(Path(tmp) / "mlp-1024-2048-2048-10.onnx", (1024, 2048, 2048, 10)),
        ]
        for path in artifacts:
            session = open_session(path, threads=args.threads)
            rows = [measure(session, b, args.clients or b, args.max_wait, args.rounds) for b in BATCHES]
            print_rows(path.name, rows)
            best = rows[-1]
            print(f"max batch {best['max_batch']}: micro-batcher {best['micro_vs_locked']:.2f}x the locked one-sample "
                  f"throughput, {best['micro_vs_batch']:.0%} of the ideal batch-{best['max_batch']} calls")
    assert "torch" not in sys.modules
    return 0


if __name__ == "__main__":
    sys.exit(main())
