"""The budget-driven choice: objective, fallbacks, Pareto front (pure logic, no torch)."""

import pytest

from edgekit.compress.search import SearchCandidate, choose, pareto_front
from edgekit.select import Measured
from edgekit.validate import Check


def _candidate(model: str, precision: str, size: int, accuracy: float, latency: float | None = 1.0,
               download: int | None = None, fails: int = 0) -> SearchCandidate:
    metrics = {"accuracy": accuracy, "accuracy_drop": 0.99 - accuracy}
    if latency is not None:
        metrics["latency_p50_ms"] = latency
    checks = [Check("max_accuracy_drop", 0.01, 0.02, "fail") for _ in range(fails)] or [Check("max_size_mb", 8, 0.1, "pass")]
    return SearchCandidate(model, precision, Measured("recipe", metrics, checks, size), download or size // 2)


def test_the_smallest_passing_candidate_ships_and_failures_are_listed() -> None:
    pool = [
        _candidate("model", "fp32", 1000, 0.99),
        _candidate("model", "int8", 300, 0.985),
        _candidate("model", "int4", 150, 0.95, fails=1),  # smaller, but misses the accuracy budget
    ]
    winner, record = choose(pool, "size")
    assert winner.key == "model/int8/recipe"
    assert record["chosen"] == winner.key
    assert "2 of 3 candidates" in record["reason"]
    rows = {r["candidate"]: r for r in record["candidates"]}
    assert rows["model/int4/recipe"]["failed"] == ["max_accuracy_drop"]
    assert rows["model/int4/recipe"]["passed"] is False
    assert [r["size_bytes"] for r in record["candidates"]] == [150, 300, 1000]  # sorted by the size axis


def test_download_objective_prefers_what_compresses() -> None:
    dense = _candidate("model", "int8", 300, 0.985, download=260)
    sparse = _candidate("pruned-s0.8", "int8", 300, 0.983, download=90)  # same bytes on disk, zeros gzip away
    assert choose([dense, sparse], "size")[0] is dense  # tie on size: better accuracy wins
    winner, record = choose([dense, sparse], "download")
    assert winner is sparse
    assert record["size_axis"] == "download"


def test_latency_objective_and_its_fallback_when_a_runtime_is_emulated() -> None:
    fast = _candidate("model", "int8", 400, 0.985, latency=0.2)
    small = _candidate("model", "int4", 200, 0.985, latency=0.9)
    assert choose([fast, small], "latency")[0] is fast
    emulated = [_candidate("model", "fp16", 500, 0.99, latency=None), _candidate("model", "int8", 250, 0.99, latency=None)]
    winner, record = choose(emulated, "latency")
    assert winner.precision == "int8"
    assert record["objective_used"] == "size" and "emulated" in record["note"]


def test_with_nothing_passing_the_fewest_failures_then_best_quality_ship() -> None:
    pool = [_candidate("model", "int4", 100, 0.90, fails=2), _candidate("model", "int8", 300, 0.95, fails=1),
            _candidate("student-w0.5", "int8", 150, 0.96, fails=1)]
    winner, record = choose(pool, "size")
    assert winner.key == "student-w0.5/int8/recipe"
    assert record["reason"].startswith("no candidate meets every budget")


def test_pareto_front_drops_dominated_candidates_only() -> None:
    a = _candidate("model", "fp32", 1000, 0.99, latency=1.0)
    b = _candidate("model", "int8", 300, 0.985, latency=0.5)
    c = _candidate("model", "fp16", 600, 0.985, latency=0.9)  # b is smaller, as accurate and faster
    d = _candidate("model", "int4", 200, 0.97, latency=2.0)  # smallest: on the front despite being slow
    assert pareto_front([a, b, c, d]) == {a.key, b.key, d.key}
    # latency only counts when every candidate has it
    c_emulated = _candidate("model", "fp16", 300, 0.99, latency=None)
    assert pareto_front([b, c_emulated]) == {c_emulated.key}


def test_an_empty_pool_is_an_error_for_the_caller() -> None:
    with pytest.raises(ValueError):
        choose([], "size")


def test_candidates_slower_than_fp32_ship_only_when_nothing_else_passes() -> None:
    from dataclasses import replace

    int4 = _candidate("model", "int4", 100, 0.985)
    int8 = _candidate("model", "int8", 300, 0.985)
    slow_int4 = replace(int4, measured=replace(int4.measured, fp32_ratio=1.4))  # timed against FP32, interleaved
    quick_int8 = replace(int8, measured=replace(int8.measured, fp32_ratio=0.8))
    winner, record = choose([slow_int4, quick_int8], "size")
    assert winner.key == quick_int8.key and "at most 1.03x the FP32 latency" in record["reason"]
    assert winner.measured.metrics["latency_vs_fp32"] == 0.8  # the shipped metrics carry the ratio
    assert {r["candidate"]: r["latency_vs_fp32"] for r in record["candidates"]}["model/int4/recipe"] == 1.4
    assert choose([slow_int4, quick_int8], "size", max_latency_vs_fp32=None)[0].key == slow_int4.key  # preference off
    alone, record = choose([slow_int4], "size")
    assert alone.key == slow_int4.key and record["slower_than_fp32"]["latency_vs_fp32"] == 1.4
    # without interleaved ratios, the build's FP32 p50 is the yardstick
    assert choose([int4, int8], "size", fp32_latency_ms=0.5)[0].key == int4.key  # both 1.0 ms: 2x FP32, none fast
    assert choose([int4, int8], "size", fp32_latency_ms=2.0)[0].key == int4.key
