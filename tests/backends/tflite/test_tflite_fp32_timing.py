"""Interleaved timing against FP32: the paired statistic, and a real run of a model against its copy."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends.tflite import fp32_timing

# Tests run with --import-mode=importlib, which does not put this folder on sys.path;
# the shared tiny models live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
from tflite_testing_models import built, case  # noqa: E402


def test_ratio_is_the_median_of_paired_rounds() -> None:
    # One round where the host hiccuped during the candidate's block must not decide the answer.
    fp32 = {"latency_p50_ms": 1.0, "runs": 30, "round_p50_ms": [1.0, 1.0, 1.0, 1.0, 1.0]}
    candidate = {"latency_p50_ms": 0.9, "runs": 30, "round_p50_ms": [0.8, 0.8, 5.0, 0.8, 0.9]}
    record = fp32_timing.comparison(candidate, fp32)
    assert record["latency_vs_fp32"] == pytest.approx(0.8)
    assert record["rounds_faster"] == pytest.approx(0.8)
    assert record["fp32_latency_p50_ms"] == 1.0 and record["latency_p50_ms"] == 0.9


@pytest.mark.slow
def test_a_model_timed_against_its_own_copy_is_about_as_fast(tmp_path: Path) -> None:
    (fp32,) = built("mlp", "fp32")
    copy = tmp_path / "copy.tflite"
    shutil.copyfile(fp32.path, copy)
    feeds = {"features": case("mlp").test["features"][:1]}
    first, second = fp32_timing.interleaved([fp32.path, copy], feeds, rounds=10)
    assert first["runs"] >= 10 * fp32_timing.MIN_RUNS and len(first["round_p50_ms"]) == 10
    ratio = fp32_timing.comparison(second, first)["latency_vs_fp32"]
    # Measured within 0.98-1.02; the bound is loose because the test host is shared.
    assert 0.7 < ratio < 1.4
    assert np.all(np.asarray(first["round_p50_ms"]) > 0)
