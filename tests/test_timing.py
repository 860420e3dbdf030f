"""The format-neutral interleaved timing: rotating order, per-model blocks, median of paired ratios."""

from __future__ import annotations

import pytest

from edgekit import timing


def test_rounds_rotate_the_order_and_size_blocks_per_model() -> None:
    calls: list[tuple[str, int]] = []

    def timer(name: str, seconds: float):
        def run(runs: int, warmup: int) -> list[float]:
            calls.append((name, runs))
            return [seconds] * runs
        return run

    fast, slow = timing.interleaved([timer("fast", 1e-5), timer("slow", 1e-3)], rounds=4)
    timed = [name for name, _ in calls[2:]]  # after one warm-up call each
    assert timed == ["fast", "slow", "slow", "fast", "fast", "slow", "slow", "fast"]
    assert dict(calls[2:])["fast"] == timing.MAX_RUNS and dict(calls[2:])["slow"] == 10
    assert fast["round_p50_ms"] == [pytest.approx(0.01)] * 4 and slow["runs"] == 40
    assert timing.comparison(fast, slow, "test")["latency_vs_fp32"] == pytest.approx(0.01)
