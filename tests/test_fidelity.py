"""Fidelity metrics and the quality bar backends search against."""

import numpy as np
import pytest

from edgekit.fidelity import FidelityTarget, cosine, intervals, measure, per_sample_cosine, wilson_interval


def test_measure_reports_cosine_sqnr_and_top1_for_class_scores() -> None:
    rng = np.random.default_rng(0)
    reference = [rng.normal(size=(50, 10))]
    metrics = measure([reference[0] + 0.01 * rng.normal(size=(50, 10))], reference)
    assert metrics["cosine"] > 0.999 and metrics["sqnr_db"] > 30 and metrics["top1_agreement"] > 0.9
    exact = measure(reference, reference)
    assert "sqnr_db" not in exact and exact["cosine"] == pytest.approx(1.0)


def test_single_score_outputs_have_no_top1() -> None:
    reference = [np.linspace(-1, 1, 20).reshape(20, 1)]
    assert "top1_agreement" not in measure(reference, reference)


def test_cosine_is_the_worst_output() -> None:
    good = np.ones((4, 3))
    assert cosine([good, -good], [good, good]) == pytest.approx(-1.0)
    assert per_sample_cosine(np.zeros((2, 3)), np.zeros((2, 3))).tolist() == [1.0, 1.0]


def test_target_names_each_missed_bar() -> None:
    bar = FidelityTarget(min_cosine=0.99, min_top1_agreement=0.95, min_sqnr_db=15.0)
    assert bar.required and bar.met_by({"cosine": 0.995, "top1_agreement": 0.97, "sqnr_db": 20.0})
    misses = bar.misses({"cosine": 0.81, "top1_agreement": 0.97, "sqnr_db": 9.0})
    assert misses == ["cosine 0.81 < 0.99", "sqnr_db 9 < 15"]
    assert bar.misses({"cosine": 1.0, "top1_agreement": 1.0}) == []  # exact outputs have no SQNR
    assert not FidelityTarget().required and FidelityTarget().met_by({})


def test_wilson_interval_brackets_the_proportion_and_stays_in_range() -> None:
    low, high = wilson_interval(95, 100)
    assert 0.88 < low < 0.95 < high < 0.99
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_intervals_narrow_with_more_samples() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (32, 512):
        reference = [rng.normal(size=(n, 10))]
        outputs = [reference[0] + 0.5 * rng.normal(size=(n, 10))]
        ci = intervals(outputs, reference, labels=reference[0].argmax(1))
        assert ci["cosine_ci95_low"] < measure(outputs, reference)["cosine"] < ci["cosine_ci95_high"]
        widths.append(ci["top1_agreement_ci95_high"] - ci["top1_agreement_ci95_low"])
    assert widths[1] < widths[0] / 2
