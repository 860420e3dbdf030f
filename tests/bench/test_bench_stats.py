"""95 % intervals of ``bench compare`` ratios: a block bootstrap over per-run latencies."""

from __future__ import annotations

import numpy as np

from edgekit import bench
from edgekit.bench_stats import latency_samples, metric_interval, min_runs, ratio_interval


def _runs(n: int, scale: float, seed: int, drift: float = 0.0) -> list[float]:
    """Latencies in ms: lognormal noise around ``scale`` with AR(1) drift (runs are not independent)."""
    rng = np.random.default_rng(seed)
    ar = np.zeros(n)
    for i in range(1, n):
        ar[i] = drift * ar[i - 1] + rng.normal(0, 0.05)
    return list(scale * np.exp(ar + rng.normal(0, 0.05, n)))


def test_a_real_difference_is_inside_its_interval_and_no_difference_contains_one() -> None:
    a, b = _runs(300, 1.0, 0), _runs(300, 1.5, 1)
    low, high = ratio_interval(a, b, "p50")
    assert low < 1.5 < high and low > 1.3
    same = ratio_interval(a, _runs(300, 1.0, 2), "p50")
    assert same[0] < 1 < same[1]
    assert ratio_interval(a, b, "p50") == [low, high]  # seeded: the same files, the same interval


def test_too_few_runs_for_a_quantile_give_no_interval() -> None:
    assert (min_runs(0.5), min_runs(0.9), min_runs(0.99)) == (10, 50, 500)
    assert ratio_interval(_runs(100, 1, 0), _runs(100, 1, 1), "p99") is None
    assert ratio_interval(_runs(9, 1, 0), _runs(100, 1, 1), "p50") is None
    assert ratio_interval(None, _runs(100, 1, 1), "mean") is None


def _coverage(rho: float, comparisons: int = 100) -> float:
    """Share of A/A comparisons (true ratio 1, 200 runs each, AR(1) drift rho) whose mean interval holds 1."""
    found = [ratio_interval(_runs(200, 1, 2 * k, rho), _runs(200, 1, 2 * k + 1, rho), "mean") for k in range(comparisons)]
    return float(np.mean([low <= 1 <= high for low, high in found]))


def test_block_resampling_keeps_coverage_near_95_percent_when_runs_drift(monkeypatch) -> None:
    import edgekit.bench_stats as stats

    assert _coverage(0.0) >= 0.9  # independent runs
    assert _coverage(0.5) >= 0.85  # drifting runs (measured 0.90 over 200 comparisons)
    blocks = _coverage(0.8)
    monkeypatch.setattr(stats, "block_length", lambda n: 1)  # resampling single runs, as a plain bootstrap would
    assert blocks > _coverage(0.8) + 0.15  # measured 0.77 against 0.49


def test_samples_are_thinned_evenly_in_run_order() -> None:
    times = [i * 1e-6 for i in range(10_000)]
    kept = latency_samples(times, limit=100)
    assert len(kept) == 100 and kept[0] == 0.0 and kept[-1] == 9.999 and kept == sorted(kept)
    assert latency_samples([0.0012345678]) == [1.235]


def test_compare_gives_intervals_for_latency_and_throughput_and_none_for_single_figures() -> None:
    def result(scale: float, batch: int, samples: bool) -> dict:
        runs = _runs(200, scale, int(scale * 10))
        stats = {"p50": float(np.median(runs)), "p90": float(np.percentile(runs, 90)),
                 "p99": float(np.percentile(runs, 99)), "mean": float(np.mean(runs))}
        return {"artifact": "m.onnx", "threads": 1, "batch": batch, "cold_start_ms": 5.0, "latency_ms": stats,
                "throughput": {"samples_per_s": batch * 1e3 / stats["mean"]}, "memory": {"peak_rss_mb": 50.0},
                **({"latency_samples_ms": runs} if samples else {})}

    doc = lambda r: {"machine": {}, "results": [r]}  # noqa: E731
    rows = {m["metric"]: m for m in bench.compare(doc(result(1.0, 1, True)), doc(result(2.0, 1, True)))["pairs"][0]["metrics"]}
    assert rows["p50 ms"]["ratio_ci95"][0] < rows["p50 ms"]["ratio"] < rows["p50 ms"]["ratio_ci95"][1]
    low, high = rows["throughput /s"]["ratio_ci95"]
    assert low < rows["throughput /s"]["ratio"] < high < 1  # B is slower: fewer samples per second
    assert rows["p99 ms"]["ratio_ci95"] is None  # 200 runs are too few for a p99 interval
    assert rows["cold start ms"]["ratio_ci95"] is None and rows["peak RSS MiB"]["ratio_ci95"] is None
    old = bench.compare(doc(result(1.0, 1, False)), doc(result(2.0, 1, True)))  # a file from before samples were kept
    assert all(m["ratio_ci95"] is None for m in old["pairs"][0]["metrics"])
    assert metric_interval("x", ("latency_ms", "p50"), {}, {}) is None
