"""The shipped samples meet the promises of the ONNX-only and the microcontroller profiles.

INT8 costs at most one point of accuracy and INT4 is smaller than INT8; every
sample runs on esp32-s3 (full-integer TFLite, arena measured in TFLite
Micro). Measured by real builds on the samples' held-out data.
"""

import json
from pathlib import Path

import pytest

from edgekit.artifact import sha256_file

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
    # what attackers see, for every artifact: robust accuracy where inputs are float, membership everywhere
    suite = manifest["attacks"]
    assert ("robustness_skipped" in suite) == (sample == "tokens") and suite["members"] == suite["samples"]
    for artifact in manifest["artifacts"]:
        attacks = artifact["attacks"]
        assert ("robustness" in attacks) == (sample != "tokens")
        if "robustness" in attacks:
            assert attacks["robustness"]["robust_accuracy"] <= attacks["robustness"]["clean_accuracy"]
        low, high = attacks["membership"]["auc_ci95"]
        assert low <= attacks["membership"]["auc"] <= high and high - low < 0.3  # 40 samples: mobilenet


@pytest.mark.slow
@pytest.mark.parametrize("sample", sorted(p.parent.name for p in SAMPLES.glob("*/edgekit.toml")))
def test_sample_runs_on_the_microcontroller(sample: str, tmp_path: Path, cli) -> None:
    result = cli("build", SAMPLES / sample / "edgekit.toml", "-t", "esp32-s3", "-o", tmp_path, "--json")
    assert result.code == 0, result.err
    (artifact,) = json.loads(result.out)["artifacts"]
    assert (artifact["format"], artifact["precision"], artifact["io"]) == ("tflite", "int8", "int8")
    micro = artifact["micro"]
    assert micro["method"].startswith("measured with tflite-micro")  # the micro runtime itself, not an estimate
    assert 0 < micro["arena_bytes"] <= 320 * 1024
    assert artifact["metrics"]["accuracy_drop"] <= 0.01
    # device code needs each int8 tensor's scale and zero point (token ids stay integers, unscaled)
    outputs = artifact["io_quantization"]["outputs"].values()
    assert outputs and all(o["dtype"] == "int8" and o["scale"] > 0 for o in outputs)
    # the firmware library ships beside it, with the arena measured in TFLite Micro and hashes the bundle checks
    firmware = artifact["firmware"]
    assert firmware["arena_bytes"] == -(-micro["arena_bytes"] // 16) * 16 and firmware["ops"]
    for relative, digest in firmware["files"].items():
        assert relative.startswith(firmware["path"] + "/") and sha256_file(tmp_path / relative) == digest
    keys = tmp_path.parent / f"{sample}-keys"
    assert cli("keygen", "-o", keys, "--no-encrypt").code == 0
    header = next(tmp_path.glob(f"{firmware['path']}/*_settings.h"))
    header.write_text(header.read_text().replace("kTensorArenaSize", "kTensorArenaSizeX"))
    refused = cli("bundle", tmp_path, "--key", keys / "edgekit.key", "--version", "1.0.0", "-o", tmp_path.parent / "b")
    assert refused.code == 2 and "firmware file" in refused.err and "changed after the build" in refused.err
