"""Artifacts run the suite from their own bytes: a fragile quantization and a memorising model are caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit import backends
from edgekit.attacks.assess import assess, describe
from edgekit.attacks.craft import craft_suite
from edgekit.config import AttacksSection, Budgets
from edgekit.data import Dataset
from edgekit.validate import attack_checks, run_batched

BUDGET = Budgets(max_robust_accuracy_drop=0.03, max_membership_auc=0.6)


def _assess(path: Path, suite):  # noqa: ANN001, ANN202
    session = backends.open_session(path)
    try:
        return assess(lambda inputs: run_batched(session, Dataset(inputs, None)), suite)
    finally:
        session.close()


def _fragile_int8(fp32: Path, calibration: np.ndarray, destination: Path) -> Path:
    """A real onnxruntime static INT8 whose activation scales are 100x too large (calibrated on inputs x100)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"x": (calibration[i : i + 1] * 100).astype(np.float32)} for i in range(64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quantize_static(str(fp32), str(destination), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return destination


@pytest.fixture(scope="module")
def suite(digits):  # noqa: ANN001, ANN201 - fixture
    return craft_suite(digits.model, digits.split, digits.train, AttacksSection(), classes=True)


def test_a_faithful_artifact_matches_fp32_and_passes(digits, suite, export_onnx) -> None:  # noqa: ANN001
    metrics, record = _assess(export_onnx(digits.model, "mlp"), suite)
    robustness = record["robustness"]
    assert robustness["robust_accuracy"] == pytest.approx(robustness["fp32_robust_accuracy"], abs=0.005)
    assert abs(metrics["robust_accuracy_drop"]) <= 0.005
    assert robustness["accuracy"]["pgd"][-1] < robustness["clean_accuracy"] - 0.3  # the attacks bite
    assert all(c.status == "pass" for c in attack_checks(BUDGET, metrics))


def test_a_quantization_with_huge_activation_scales_loses_more_under_attack(digits, suite, export_onnx,
                                                                            tmp_path) -> None:  # noqa: ANN001
    fp32 = export_onnx(digits.model, "mlp")
    fragile = _fragile_int8(fp32, digits.split.calibration.inputs["x"], tmp_path / "fragile.int8.onnx")
    faithful_metrics, _ = _assess(fp32, suite)
    metrics, record = _assess(fragile, suite)
    robustness = record["robustness"]
    assert metrics["robust_accuracy_drop"] > faithful_metrics["robust_accuracy_drop"] + 0.03
    assert robustness["attack_loss"] > robustness["fp32_attack_loss"]  # the attack itself takes more away
    checks = {c.budget: c for c in attack_checks(BUDGET, metrics)}
    assert checks["max_robust_accuracy_drop"].status == "fail"


def test_a_model_that_memorised_its_training_set_leaks_membership(overfit, export_onnx) -> None:  # noqa: ANN001
    leaky = craft_suite(overfit.model, overfit.split, overfit.train, AttacksSection(samples=96), classes=True)
    metrics, record = _assess(export_onnx(overfit.model, "overfit"), leaky)
    assert metrics["membership_auc_ci95_low"] > 0.65, record["membership"]
    assert record["membership"]["score"] == "loss" and record["membership"]["members"] == 96
    assert record["membership"]["auc"] == pytest.approx(record["membership"]["fp32_auc"], abs=0.02)
    checks = {c.budget: c for c in attack_checks(BUDGET, metrics)}
    assert checks["max_membership_auc"].status == "fail"


def test_the_shipped_sample_is_reported_near_half(suite) -> None:  # noqa: ANN001
    membership = describe(suite)["fp32"]["membership"]
    low, high = membership["auc_ci95"]
    assert low < 0.5 < high and membership["auc"] < 0.56


def test_an_emulated_sized_run_is_judged_against_fp32_on_the_same_samples(digits, suite, export_onnx) -> None:  # noqa: ANN001
    session = backends.open_session(export_onnx(digits.model, "mlp"))
    try:
        metrics, record = assess(lambda inputs: run_batched(session, Dataset(inputs, None)), suite, count=40)
    finally:
        session.close()
    assert record["samples"] == 40 and record["membership"]["members"] == 40
    assert metrics["robust_accuracy_drop"] == pytest.approx(0.0, abs=1e-9)  # FP32 restricted to the same 40


def test_budgets_without_a_measurement_are_skipped_with_why() -> None:
    checks = {c.budget: c for c in attack_checks(BUDGET, {})}
    assert checks["max_robust_accuracy_drop"].status == "skipped"
    assert "robustness not measured" in checks["max_robust_accuracy_drop"].note
    assert "membership not measured" in checks["max_membership_auc"].note
