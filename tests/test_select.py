"""select.choose: fastest passing candidate, never slower than FP32 when one is not, and loud when all are."""

from __future__ import annotations

import pytest

from edgekit.select import SAME_SPEED, Measured, choose, vs_fp32
from edgekit.validate import Check

OK = Check("max_accuracy_drop", 0.01, 0.0, "pass")
BAD = Check("max_accuracy_drop", 0.01, 0.05, "fail")


def _m(variant: str, p50: float, ratio: float | None = None, passed: bool = True) -> Measured:
    return Measured(variant, {"latency_p50_ms": p50, "cosine": 0.999}, [OK if passed else BAD], 1000, fp32_ratio=ratio)


def test_interleaved_ratio_decides_over_a_noisy_p50() -> None:
    # "noisy" looked faster in its own timing block, but timed against FP32 together it is slower.
    winner, record = choose([_m("noisy", 0.10, ratio=1.20), _m("steady", 0.11, ratio=0.90)])
    assert winner.variant == "steady"
    assert "not slower than FP32" in record["reason"]
    assert record["latency_vs_fp32"] == pytest.approx(0.90)
    assert winner.metrics["latency_vs_fp32"] == pytest.approx(0.90)  # the manifest's metrics carry it
    assert record["latency_vs_fp32_source"] == "interleaved with the FP32 model"
    assert "slower_than_fp32" not in record


def test_all_slower_than_fp32_still_ships_the_fastest_and_says_so() -> None:
    winner, record = choose([_m("pt2e-static", 0.30, ratio=1.5), _m("aeq-static", 0.25, ratio=1.25)])
    assert winner.variant == "aeq-static" and winner.passed
    slower = record["slower_than_fp32"]
    assert slower["latency_vs_fp32"] > 1 and slower["latency_vs_fp32"] == pytest.approx(1.25)
    assert "slower than the FP32 model" in slower["reason"]
    assert "slower than FP32" in record["reason"] and "1.25x" in record["reason"]
    assert winner.metrics["latency_vs_fp32"] == pytest.approx(1.25)


def test_a_single_slower_candidate_is_flagged_too() -> None:
    winner, record = choose([_m("only", 0.3, ratio=2.0)])
    assert winner.variant == "only" and record["slower_than_fp32"]["latency_vs_fp32"] == pytest.approx(2.0)


def test_a_failing_candidate_faster_than_fp32_does_not_win() -> None:
    winner, record = choose([_m("fast-but-wrong", 0.05, ratio=0.5, passed=False), _m("right", 0.2, ratio=1.1)])
    assert winner.variant == "right"
    assert record["slower_than_fp32"]["latency_vs_fp32"] == pytest.approx(1.1)


def test_within_timing_noise_counts_as_not_slower() -> None:
    edge = (1.0 + SAME_SPEED) / 2  # slower by less than the noise of an interleaved timing
    winner, record = choose([_m("same", 0.1, ratio=edge)])
    assert winner.variant == "same" and "slower_than_fp32" not in record
    assert record["latency_vs_fp32"] == pytest.approx(edge)


def test_without_interleaved_ratios_the_separate_fp32_latency_is_used() -> None:
    candidates = [_m("a", 0.5), _m("b", 0.2)]
    assert vs_fp32(candidates[0], 0.4) == pytest.approx(1.25)
    winner, record = choose(candidates, fp32_latency_ms=0.4)
    assert winner.variant == "b" and record["latency_vs_fp32"] == pytest.approx(0.5)
    assert record["latency_vs_fp32_source"] == "separate FP32 measurement in this build"
    _, record = choose([_m("a", 0.5)], fp32_latency_ms=0.4)
    assert record["slower_than_fp32"]["latency_vs_fp32"] == pytest.approx(1.25)


def test_without_any_fp32_figure_the_fastest_passing_ships_unflagged() -> None:
    winner, record = choose([_m("a", 0.5), _m("b", 0.2), _m("c", 0.1, passed=False)])
    assert winner.variant == "b"
    assert "latency_vs_fp32" not in record and "latency_vs_fp32" not in winner.metrics
    assert record["reason"] == "fastest on the host among candidates that meet every budget"


def test_emulated_candidates_ship_the_smallest() -> None:
    small = Measured("small", {"cosine": 0.999}, [OK], 100)
    big = Measured("big", {"cosine": 0.999}, [OK], 900)
    winner, record = choose([big, small], fp32_latency_ms=1.0)
    assert winner.variant == "small" and record["reason"].startswith("smallest")
    assert "latency_vs_fp32" not in record


def test_no_candidates_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        choose([])


def test_a_resource_budget_every_candidate_fails_does_not_pick_the_winner() -> None:
    """A 22 MB encoder against an 8 MB budget: the fast candidate that keeps fidelity still ships, marked failed."""
    def candidate(name: str, cosine: float, ratio: float, quality_ok: bool = True) -> Measured:
        checks = [Check("max_size_mb", 8.0, 23.0, "fail"),
                  Check("min_cosine", 0.99, cosine, "pass" if quality_ok else "fail")]
        return Measured(name, {"cosine": cosine, "latency_p50_ms": 10 * ratio}, checks, 23_000_000, fp32_ratio=ratio)

    pool = [candidate("static", 0.95, 0.55, quality_ok=False), candidate("dynamic", 0.9925, 0.65),
            candidate("weight-only", 0.9995, 1.0)]
    winner, record = choose(pool)
    assert winner.variant == "dynamic" and not winner.passed
    assert "all fail max_size_mb" in record["reason"]
    every_quality_fails = [candidate("a", 0.95, 0.5, False), candidate("b", 0.97, 0.9, False)]
    assert choose(every_quality_fails)[0].variant == "b"  # quality failures are never set aside


def test_pools_split_passing_and_fast_and_set_aside_budgets_every_candidate_fails() -> None:
    from edgekit.select import pools

    size = Check("max_size_mb", 1.0, 2.0, "fail")
    split = pools([_m("a", 0.1, 0.9), _m("b", 0.1, 1.5), _m("c", 0.1, None, passed=False)], [0.9, 1.5, None])
    assert (split.passing, split.fast, split.shared) == ([0, 1], [0], frozenset())
    too_big = [Measured("x", {}, [OK, size], 10), Measured("y", {}, [BAD, size], 10)]
    split = pools(too_big, [None, None])
    assert split.shared == {"max_size_mb"} and split.passing == [0] and split.fast == [0]
    assert pools([_m("a", 0.1, 1.5)], [1.5], limit=None).fast == [0]  # speed not judged
