"""The shipped samples meet the foundation's promises on the ONNX-only profile.

INT8 costs at most one point of accuracy and INT4 is smaller than INT8, for
every sample, measured by real builds on the samples' held-out data.
"""

import json
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


@pytest.mark.slow
@pytest.mark.parametrize("sample", sorted(p.parent.name for p in SAMPLES.glob("*/edgekit.toml")))
def test_sample_builds_for_every_onnx_precision(sample: str, tmp_path: Path, cli) -> None:
    result = cli("build", SAMPLES / sample / "edgekit.toml", "-t", "jetson-orin-nano", "-o", tmp_path, "--json")
    assert result.code == 0, result.err
    manifest = json.loads(result.out)
    by_precision = {a["precision"]: a for a in manifest["artifacts"]}
    assert set(by_precision) == {"fp32", "fp16", "int8", "int4"}
    assert manifest["reference"]["accuracy"] > 0.9
    assert by_precision["int8"]["metrics"]["accuracy_drop"] <= 0.01
    assert by_precision["int4"]["size_bytes"] < by_precision["int8"]["size_bytes"]
    assert by_precision["fp32"]["metrics"]["max_abs_error"] < 1e-4
