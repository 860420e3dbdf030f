import numpy as np

from edgekit.artifact import CandidateFacts
from edgekit.config import Budgets
from edgekit.select import Candidate, Measured, choose
from edgekit.validate import Check, check_budgets, cosine, decided_by, max_abs_error, sqnr_db, top1_agreement, verdict


def test_fidelity_metrics_on_known_values() -> None:
    ref = [np.array([[1.0, 0.0], [0.0, 2.0]])]
    same = [ref[0].copy()]
    assert cosine(same, ref) == 1.0 and max_abs_error(same, ref) == 0.0 and sqnr_db(same, ref) == float("inf")
    noisy = [ref[0] + np.array([[0.0, 0.1], [0.0, 0.0]])]
    assert np.isclose(max_abs_error(noisy, ref), 0.1)
    assert np.isclose(sqnr_db(noisy, ref), 10 * np.log10(5.0 / 0.01))
    flipped = [np.array([[0.0, 1.0], [0.0, 2.0]])]
    assert top1_agreement(flipped, ref) == 0.5


def test_budget_checks_pass_fail_and_skip_with_reasons() -> None:
    budgets = Budgets(max_size_mb=1.0, max_accuracy_drop=0.01, max_latency_ms=5.0, min_cosine=0.99)
    metrics = {"accuracy_drop": 0.02, "cosine": 0.995, "latency_p50_ms": 1.0}
    checks = {c.budget: c for c in check_budgets(metrics, budgets, 500_000, CandidateFacts(), device_measured=False, device_name="pi")}
    assert checks["max_size_mb"].status == "pass" and checks["max_size_mb"].value == 0.5
    assert checks["max_accuracy_drop"].status == "fail"
    assert checks["min_cosine"].status == "pass"
    assert checks["max_latency_ms"].status == "skipped" and "pi" in checks["max_latency_ms"].note
    on_device = {c.budget: c for c in check_budgets(metrics, budgets, 500_000, CandidateFacts(), device_measured=True, device_name="pi")}
    assert on_device["max_latency_ms"].status == "pass"
    assert not verdict(list(checks.values()))


def test_microcontroller_budgets_use_flash_and_arena_figures() -> None:
    budgets = Budgets(max_flash_kb=100, max_arena_kb=10)
    details = {"micro": {"flash_bytes": 50 * 1024, "arena_bytes": 20 * 1024, "method": "measured"}}
    checks = {c.budget: c for c in check_budgets({}, budgets, 1, CandidateFacts.read(details), device_measured=False, device_name="mcu")}
    assert checks["max_flash_kb"].status == "pass" and checks["max_arena_kb"].status == "fail"


def test_identical_outputs_have_no_sqnr_but_pass_an_sqnr_budget() -> None:
    import json

    from edgekit.backends import TensorSpec
    from edgekit.data import Dataset
    from edgekit.validate import evaluate

    class Echo:
        inputs = [TensorSpec("x", (None, 2), "float32")]
        outputs = [TensorSpec("y", (None, 2), "float32")]

        def run(self, feeds):
            return [feeds["x"]]

    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    metrics = evaluate(Echo(), Dataset({"x": x}, None), [x], None)
    assert "sqnr_db" not in metrics and metrics["max_abs_error"] == 0.0
    json.dumps(metrics, allow_nan=False)  # manifests are strict JSON
    checks = check_budgets(metrics, Budgets(min_sqnr_db=30.0), 1, CandidateFacts(), device_measured=False, device_name="d")
    assert checks[0].status == "pass" and "identical" in checks[0].note


def test_scaled_max_abs_error_is_max_abs_error_for_outputs_within_the_magnitude() -> None:
    from edgekit.validate import AGREEMENT_MAGNITUDE, scaled_max_abs_error

    small = [np.array([[1.0, -5.0]]), np.array([[0.2, 0.3]])]
    noisy = [small[0] + [[0.0, 0.004]], small[1] + [[0.003, 0.0]]]
    assert np.isclose(scaled_max_abs_error(noisy, small), max_abs_error(noisy, small))
    # The same relative error on outputs 4x past the magnitude scores the same as at the magnitude.
    at, past = [np.array([[AGREEMENT_MAGNITUDE]])], [np.array([[4 * AGREEMENT_MAGNITUDE]])]
    assert np.isclose(scaled_max_abs_error([at[0] * 1.001], at), scaled_max_abs_error([past[0] * 1.001], past))


def test_float_agreement_check_only_for_declared_float_programs_and_it_can_fail() -> None:
    def agreement(scaled_error: float | None, details: dict) -> Check | None:
        metrics = {} if scaled_error is None else {"max_abs_error": scaled_error, "max_abs_error_scaled": scaled_error}
        checks = check_budgets(metrics, Budgets(max_size_mb=1.0), 1, CandidateFacts.read(details), device_measured=False, device_name="iphone")
        return next((c for c in checks if c.budget == "float_agreement"), None)

    fp16 = {"float_agreement": "fp16"}
    assert agreement(0.0118, {}) is None  # compressed candidates and other backends: no such check
    failed, passed = agreement(0.0118, fp16), agreement(0.009, fp16)
    assert failed is not None and failed.status == "fail" and failed.limit == 1e-2
    assert "0.0118 is over 0.01" in failed.note and "fp32" in failed.note
    assert passed is not None and passed.status == "pass"
    fp32_drift = agreement(2e-4, {"float_agreement": "fp32"})
    assert fp32_drift is not None and fp32_drift.status == "fail" and fp32_drift.limit == 1e-4
    skipped = agreement(None, fp16)
    assert skipped is not None and skipped.status == "skipped" and "reference" in skipped.note
    # Selection then ships the candidate that agrees, even when the drifting one is smaller.
    pool = [Candidate("model", "fp16", Measured(name, {}, [check], size_bytes=size), size)
            for name, check, size in (("fp16", failed, 100), ("fp16-norm32", passed, 101))]
    winner, _ = choose(pool)
    assert winner.recipe == "fp16-norm32"


def test_a_verdict_never_rests_on_skipped_quality_budgets() -> None:
    """Unlabelled data and no FP32 reference: every quality budget is skipped, so the artifact cannot pass."""
    budgets = Budgets(max_size_mb=1.0, max_accuracy_drop=0.01, min_cosine=0.99)
    checks = check_budgets({"samples": 10.0}, budgets, 1000, CandidateFacts(), device_measured=False, device_name="pi")
    quality = [c for c in checks if c.budget == "quality"]
    assert quality and quality[0].status == "fail" and "max_accuracy_drop" in quality[0].note
    assert not verdict(checks)
    measured = check_budgets({"cosine": 0.995}, budgets, 1000, CandidateFacts(), device_measured=False, device_name="pi")
    assert verdict(measured) and decided_by(measured) == ["min_cosine"]


def test_top1_agreement_is_judged_only_for_class_scores() -> None:
    budgets = Budgets(min_top1_agreement=0.95)
    metrics = {"cosine": 0.999, "top1_agreement": 0.5}
    judged = {c.budget: c for c in check_budgets(metrics, budgets, 1, CandidateFacts(), device_measured=False, device_name="d")}
    assert judged["min_top1_agreement"].status == "fail"
    unjudged = {c.budget: c for c in check_budgets(metrics, budgets, 1, CandidateFacts(), device_measured=False, device_name="d",
                                                   classes=False)}
    assert unjudged["min_top1_agreement"].status == "skipped" and "task" in unjudged["min_top1_agreement"].note


def test_candidate_facts_are_type_checked_where_they_are_read() -> None:
    """A backend that writes a fact of the wrong type fails at the first reader, naming the key."""
    import pytest

    from edgekit.errors import InternalError

    facts = CandidateFacts.read({"float_agreement": "fp32", "vs_fp32": {"latency_vs_fp32": 0.8}, "recipe": "own key"})
    assert facts.float_agreement == "fp32" and facts.latency_vs_fp32 == 0.8 and facts.micro is None
    assert CandidateFacts.read({"vs_fp32": {"error": "timing failed"}}).latency_vs_fp32 is None
    with pytest.raises(InternalError, match=r"details\['coverage'\] is a list"):
        CandidateFacts.read({"coverage": [0.9]}, "onnx int8 qdq")
    with pytest.raises(InternalError, match="neither 'fp32' nor 'fp16'"):
        CandidateFacts.read({"float_agreement": "int8"})
