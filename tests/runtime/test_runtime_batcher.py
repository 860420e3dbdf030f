"""The micro-batcher: row routing, batch limits, signatures, failures, fixed batches, close.

Logic tests use a pure numpy ``run`` that records every call; one test runs a
real ONNX Runtime session. No test asserts a timing ratio (benchmarks/ does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import InputError
from edgekit.runtime.batcher import MicroBatcher

TIMEOUT = 10  # seconds a future may take before a test calls it hung (far above anything expected)


class Recorder:
    """A numpy model (y = 2x, s = row sums) that records the feeds of every call."""

    def __init__(self, fail_when: float | None = None) -> None:
        self.calls: list[dict[str, np.ndarray]] = []
        self.fail_when = fail_when
        self.lock = threading.Lock()

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            self.calls.append({k: v.copy() for k, v in feeds.items()})
        x = feeds["x"]
        if self.fail_when is not None and (x == self.fail_when).any():
            raise ValueError("bad sample in batch")
        return [x * 2, x.reshape(len(x), -1).sum(axis=1, keepdims=True)]

    @property
    def sizes(self) -> list[int]:
        return [len(c["x"]) for c in self.calls]


def sample(value: float, rows: int = 1, width: int = 4, dtype: type = np.float32) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, width), value, dtype=dtype)}


def check(outputs: list[np.ndarray], feeds: dict[str, np.ndarray]) -> None:
    x = feeds["x"]
    np.testing.assert_array_equal(outputs[0], x * 2)
    np.testing.assert_array_equal(outputs[1], x.reshape(len(x), -1).sum(axis=1, keepdims=True))


def in_threads(count: int, work) -> list:
    """Run ``work(i)`` in ``count`` threads released together; their results in order (errors re-raised)."""
    results: list = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def client(i: int) -> None:
        try:
            barrier.wait(timeout=TIMEOUT)
            results[i] = work(i)
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    if errors:
        raise errors[0]
    return results


def test_sixteen_threads_each_get_their_own_rows() -> None:
    model = Recorder()
    with MicroBatcher(model, max_batch=8, max_wait_ms=20) as batcher:
        outputs = in_threads(16, lambda i: batcher(sample(float(i))))
    for i, out in enumerate(outputs):
        check(out, sample(float(i)))
    assert sum(model.sizes) == 16 and max(model.sizes) <= 8
    stats = batcher.stats()
    assert stats["requests"] == 16 and stats["samples"] == 16 and stats["batches"] == len(model.calls)


def test_batches_never_exceed_max_batch_and_requests_are_never_split() -> None:
    model = Recorder()
    rows_of = [1 + i % 3 for i in range(24)]  # 1, 2 or 3 rows per request
    with MicroBatcher(model, max_batch=4, max_wait_ms=20) as batcher:
        outputs = in_threads(24, lambda i: batcher(sample(float(i), rows=rows_of[i])))
    for i, out in enumerate(outputs):
        check(out, sample(float(i), rows=rows_of[i]))
    assert max(model.sizes) <= 4 and sum(model.sizes) == sum(rows_of)
    for call in model.calls:  # each request's rows are contiguous in one call: never split across two
        values = call["x"][:, 0]
        for value in set(values.tolist()):
            assert (values == value).sum() == rows_of[int(value)]
    assert max(int(k.rsplit("_", 1)[1]) for k in batcher.stats() if k.startswith("batches_of_")) <= 4


def test_a_request_larger_than_max_batch_runs_alone() -> None:
    model = Recorder()
    with MicroBatcher(model, max_batch=4, max_wait_ms=0) as batcher:
        check(batcher(sample(7.0, rows=6)), sample(7.0, rows=6))
    assert model.sizes == [6]


def test_a_lone_request_waits_at_most_max_wait_and_runs_alone() -> None:
    model = Recorder()
    with MicroBatcher(model, max_batch=32, max_wait_ms=50) as batcher:
        future = batcher.submit(sample(3.0))
        check(future.result(timeout=TIMEOUT), sample(3.0))  # generous: a deadline miss would hang, not be slow
        stats = batcher.stats()
    assert stats["batches"] == 1 and stats["mean_batch_size"] == 1 and stats["batches_of_1"] == 1


def test_outputs_through_a_real_session_equal_direct_calls(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.backends import open_session

    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 16)).astype(np.float32),
               "w2": rng.standard_normal((16, 3)).astype(np.float32)}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)

    session = open_session(path)
    inputs = [{"x": rng.standard_normal((1 + i % 2, 8)).astype(np.float32)} for i in range(16)]
    expected = [session.run(feeds) for feeds in inputs]
    with MicroBatcher(session.run, max_batch=8, max_wait_ms=20) as batcher:
        outputs = in_threads(16, lambda i: batcher(inputs[i]))
        assert batcher.stats()["samples"] == sum(len(f["x"]) for f in inputs)
    for got, want in zip(outputs, expected, strict=True):
        assert len(got) == len(want) == 1
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


def test_a_failing_run_fails_exactly_its_batch_and_the_worker_carries_on() -> None:
    model = Recorder(fail_when=-1.0)
    # A long wait and a single submitting thread make the batches exactly requests 0-3 and 4-7.
    with MicroBatcher(model, max_batch=4, max_wait_ms=5_000) as batcher:
        values = [0.0, -1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        futures = [batcher.submit(sample(v)) for v in values]
        for future in futures[:4]:
            with pytest.raises(ValueError, match="bad sample"):
                future.result(timeout=TIMEOUT)
        for value, future in zip(values[4:], futures[4:]):
            check(future.result(timeout=TIMEOUT), sample(value))
        later = batcher.submit(sample(9.0))
        batcher.close()  # runs the lone request now instead of waiting out its 5 s deadline
        check(later.result(timeout=TIMEOUT), sample(9.0))
    stats = batcher.stats()
    assert model.sizes == [4, 4, 1] and stats["failed_batches"] == 1 and stats["batches"] == 3


def test_fixed_batch_pads_and_never_asks_for_another_size() -> None:
    model = Recorder()
    rows_of = [1, 2, 3, 6, 1]
    with MicroBatcher(model, max_batch=4, max_wait_ms=10, fixed_batch=4) as batcher:
        outputs = in_threads(len(rows_of), lambda i: batcher(sample(float(i), rows=rows_of[i])))
        stats = batcher.stats()
    for i, out in enumerate(outputs):
        check(out, sample(float(i), rows=rows_of[i]))
    assert set(model.sizes) == {4}
    assert stats["samples"] == sum(rows_of) and stats["padded_samples"] == 4 * len(model.calls) - sum(rows_of)


def test_requests_of_different_shapes_or_dtypes_are_never_concatenated() -> None:
    model = Recorder()
    kinds = [(4, np.float32), (6, np.float32), (4, np.float64)]
    with MicroBatcher(model, max_batch=16, max_wait_ms=50) as batcher:
        def work(i: int) -> list[np.ndarray]:
            width, dtype = kinds[i % 3]
            return batcher(sample(float(i), width=width, dtype=dtype))

        outputs = in_threads(12, work)
    for i, out in enumerate(outputs):
        width, dtype = kinds[i % 3]
        check(out, sample(float(i), width=width, dtype=dtype))
        assert out[0].dtype == dtype
    seen = [(c["x"].shape[1], c["x"].dtype) for c in model.calls]
    assert len(model.calls) >= 3 and set(seen) == {(w, np.dtype(d)) for w, d in kinds}


def test_close_drains_queued_work_then_refuses_new_requests() -> None:
    gate = threading.Event()
    model = Recorder()

    def slow(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        gate.wait(TIMEOUT)  # holds the worker so the rest of the requests stay queued
        return model(feeds)

    batcher = MicroBatcher(slow, max_batch=2, max_wait_ms=5_000)
    futures = [batcher.submit(sample(float(i))) for i in range(7)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    gate.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    for i, future in enumerate(futures):
        assert future.done()
        check(future.result(), sample(float(i)))
    with pytest.raises(InputError, match="closed"):
        batcher.submit(sample(1.0))
    batcher.close()  # idempotent
    assert sum(model.sizes) == 7 and max(model.sizes) <= 2


def test_bad_outputs_fail_the_batch_with_a_clear_error() -> None:
    with MicroBatcher(lambda feeds: [np.zeros(3)], max_batch=4, max_wait_ms=0) as batcher:
        with pytest.raises(InputError, match="keeps the sample axis"):
            batcher(sample(1.0, rows=2))
        assert batcher.stats()["failed_batches"] == 1


@pytest.mark.parametrize("kwargs, words", [
    ({"max_batch": 0}, "max_batch"), ({"max_batch": 2.5}, "max_batch"), ({"max_batch": True}, "max_batch"),
    ({"max_wait_ms": -1}, "max_wait_ms"), ({"max_wait_ms": float("nan")}, "max_wait_ms"),
    ({"fixed_batch": 0}, "fixed_batch"),
])
def test_settings_are_validated(kwargs: dict, words: str) -> None:
    with pytest.raises(InputError, match=words):
        MicroBatcher(Recorder(), **kwargs)


@pytest.mark.parametrize("feeds", [
    {}, {"x": np.float32(1.0)}, {"x": np.zeros((0, 4))}, {"x": np.zeros((2, 4)), "y": np.zeros((3, 4))},
])
def test_requests_without_a_common_sample_axis_are_refused(feeds: dict) -> None:
    with MicroBatcher(Recorder()) as batcher, pytest.raises(InputError):
        batcher.submit(feeds)


def test_the_module_imports_neither_torch_nor_a_runtime() -> None:
    probe = "import sys, json, edgekit.runtime.batcher\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert not loaded & {"torch", "onnxruntime", "onnx", "tensorflow", "ai_edge_litert", "coremltools"}
