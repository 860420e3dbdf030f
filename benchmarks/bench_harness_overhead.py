"""How much time does ``edgekit bench`` add to a bare ONNX Runtime call?

    python benchmarks/bench_harness_overhead.py            # exits 1 if overhead > 5%

Builds two models with onnx.helper (no torch): a small CNN (the size edge
models are: ~1 ms per inference) gated at 5%, and a near-empty 64→10 linear
layer shown for information, where the fixed cost of any Python wrapper is a
visible share of a ~10 µs call.

For each model the same inputs run, interleaved round by round so machine
noise hits both sides alike:

- bare:  ``InferenceSession.run(None, feeds)`` in a plain loop, wall time / calls;
- bench: ``edgekit.bench.time_runs`` on an edgekit session (the loop and the
         Session wrapper ``edgekit bench`` uses), mean of the per-run times it
         reports, which is what a bench result's ``latency_ms.mean`` is.

overhead = median over rounds of (bench / bare) - 1.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.backends import open_session  # noqa: E402
from edgekit.bench import time_runs  # noqa: E402

LIMIT = 0.05
ROUNDS = 21


def _save(nodes: list, inputs: list, outputs: list, weights: dict[str, np.ndarray], path: Path) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs,
                              [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def small_cnn(path: Path) -> tuple[Path, dict[str, np.ndarray], int]:
    """conv3x3(3→32) relu conv3x3(32→32) relu maxpool conv3x3(32→64) relu global-avg-pool gemm(64→10) on 1×3×48×48."""
    rng = np.random.default_rng(0)
    side = 48
    w = {"w1": rng.standard_normal((32, 3, 3, 3)) * 0.2, "w2": rng.standard_normal((32, 32, 3, 3)) * 0.05,
         "w3": rng.standard_normal((64, 32, 3, 3)) * 0.05, "fc": rng.standard_normal((10, 64)) * 0.1}
    pads = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], **pads), helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], **pads), helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p2", "w3"], ["c3"], **pads), helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    macs = side * side * 32 * 27 + side * side * 32 * 288 + (side // 2) ** 2 * 64 * 288 + 640
    model = _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], w, path)
    return model, {"x": rng.standard_normal((1, 3, side, side)).astype(np.float32)}, macs


def tiny_linear(path: Path) -> tuple[Path, dict[str, np.ndarray], int]:
    """One 64→10 MatMul: almost all of its time is the runtime's per-call cost."""
    rng = np.random.default_rng(1)
    model = _save([helper.make_node("MatMul", ["x", "w"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], {"w": rng.standard_normal((64, 10))},
                  path)
    return model, {"x": rng.standard_normal((1, 64)).astype(np.float32)}, 640


def bare_session(path: Path) -> ort.InferenceSession:
    """An InferenceSession with the options edgekit's ONNX session uses (1 intra-op thread)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(path: Path, feeds: dict[str, np.ndarray], calls: int) -> tuple[float, float, float]:
    """(median bare µs per call, median bench µs per call, median of per-round bench/bare - 1).

    The added time printed is bare × overhead: the per-round ratio cancels load drifts that
    the difference of two separate medians does not.
    """
    bare, session = bare_session(path), open_session(path, threads=1)
    run = bare.run
    for _ in range(calls // 5 + 5):  # warm both up
        run(None, feeds)
    time_runs(session, feeds, calls // 5 + 5)
    bare_us, bench_us, ratios = [], [], []
    for round_index in range(ROUNDS):
        # Alternate which side goes first, so a drift in machine load favours neither.
        order = ("bare", "bench") if round_index % 2 == 0 else ("bench", "bare")
        figures = {}
        for side in order:
            if side == "bare":
                start = time.perf_counter()
                for _ in range(calls):
                    run(None, feeds)
                figures[side] = (time.perf_counter() - start) / calls * 1e6
            else:
                figures[side] = float(np.mean(time_runs(session, feeds, calls))) * 1e6
        bare_us.append(figures["bare"])
        bench_us.append(figures["bench"])
        ratios.append(figures["bench"] / figures["bare"])
    return statistics.median(bare_us), statistics.median(bench_us), statistics.median(ratios) - 1


def main() -> int:
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, Python {sys.version.split()[0]}, "
          f"{ROUNDS} interleaved rounds, 1 thread")
    print(f"{'model':12s} {'MACs':>11s} {'bare µs':>9s} {'bench µs':>9s} {'added µs':>9s} {'overhead':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, build, calls in (("small-cnn", small_cnn, 60), ("tiny-linear", tiny_linear, 3000)):
            path, feeds, macs = build(Path(tmp) / f"{name}.onnx")
            bare, bench, overhead = measure(path, feeds, calls)
            results[name] = overhead
            print(f"{name:12s} {macs:>11,} {bare:>9.2f} {bench:>9.2f} {bare * overhead:>+9.2f} {overhead:>+9.2%}")
    gated = results["small-cnn"]
    verdict = "PASS" if gated <= LIMIT else "FAIL"
    print(f"harness overhead on small-cnn: {gated:+.2%} (limit {LIMIT:.0%}) {verdict}; "
          f"tiny-linear (informational): {results['tiny-linear']:+.2%}")
    return 0 if gated <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
