"""The attack checks in a real build and in `edgekit audit-model` on an existing one, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest



def _train_file(tiny_cnn, folder: Path) -> Path:  # noqa: ANN001
    """Fresh samples labelled by the model itself: the model "trained" on them no more than on the held-out data."""
    import torch

    from edgekit.model import load_factory

    model = load_factory(tiny_cnn.factory, tiny_cnn.weights, tiny_cnn.folder).module
    x = np.random.default_rng(5).random((64, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)
    path = folder / "train.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def build(tiny_cnn, tmp_path_factory, write_profile):  # noqa: ANN001, ANN201 - fixture
    """A config build of the tiny CNN with training data and a robustness budget; returns (folder, config)."""
    from edgekit.cli import main

    folder = tmp_path_factory.mktemp("attack_build")
    write_profile(folder, "attack-test", [("onnx", "fp32"), ("onnx", "int8")],
                  budgets={"max_robust_accuracy_drop": 0.5})
    config = folder / "edgekit.toml"
    config.write_text(f'[model]\nfactory = "{tiny_cnn.factory}"\nweights = "{tiny_cnn.weights}"\n'
                      f'[data]\npath = "{tiny_cnn.data}"\ntrain = "{_train_file(tiny_cnn, folder)}"\n'
                      'calibration_size = 32\n'
                      f'[build]\ntargets = ["{folder / "attack-test.toml"}"]\noutput = "out"\nlatency_runs = 5\n'
                      '[attacks]\nsamples = 48\npgd_steps = 3\n')
    try:
        main(["build", str(config), "--json"])
    except SystemExit as exc:
        pytest.fail(f"the build exited {exc.code}")
    return folder / "out", config


def test_every_artifact_carries_its_attack_record_and_checks(build) -> None:  # noqa: ANN001
    out, _ = build
    manifest = json.loads((out / "manifest.json").read_text())
    suite = manifest["attacks"]
    assert suite["samples"] == 48 and suite["members"] == 48 and suite["targets"] == "labels"
    assert len(suite["eps"]) == 3 and "robustness" in suite["fp32"] and "membership" in suite["fp32"]
    for artifact in manifest["artifacts"]:
        record = artifact["attacks"]
        assert record["robustness"]["fp32_robust_accuracy"] == suite["fp32"]["robustness"]["robust_accuracy"]
        assert 0.0 <= record["membership"]["auc"] <= 1.0 and len(record["membership"]["auc_ci95"]) == 2
        checks = {c["budget"]: c for c in artifact["checks"]}
        assert checks["max_robust_accuracy_drop"]["status"] == "pass"
        assert checks["max_robust_accuracy_drop"]["value"] == artifact["metrics"]["robust_accuracy_drop"]
    html = (out / "report.html").read_text()
    assert "What attackers see" in html and "Robust accuracy against perturbation size" not in html  # caption text
    assert "Accuracy under the worst of FGSM and PGD" in html


def test_audit_model_rejudges_an_existing_build_with_new_budgets(build, tmp_path: Path, cli) -> None:  # noqa: ANN001
    out, config = build
    audited = tmp_path / "audited"
    shutil.copytree(out, audited)
    result = cli("audit-model", audited, config, "--max-membership-auc", "0.01")
    assert result.code == 1, result.err
    assert "max_membership_auc fail" in result.out and "misses its budgets" in result.err
    manifest = json.loads((audited / "manifest.json").read_text())
    assert all(not a["passed"] for a in manifest["artifacts"])
    assert {t["status"] for t in manifest["targets"]} == {"failed"}
    for artifact in manifest["artifacts"]:
        report = json.loads((audited / artifact["report"]).read_text())
        assert report["passed"] is False and report["budgets"]["max_membership_auc"] == 0.01
        assert report["attacks"] == artifact["attacks"]
    before = json.loads((out / "manifest.json").read_text())
    assert [a["attacks"] for a in manifest["artifacts"]] == [a["attacks"] for a in before["artifacts"]]  # seeded


def test_audit_model_refuses_another_model_and_a_changed_artifact(build, tiny_cnn, tmp_path: Path, cli) -> None:  # noqa: ANN001
    import torch

    out, config = build
    audited = tmp_path / "audited"
    shutil.copytree(out, audited)
    other = tmp_path / "other.pt"
    weights = torch.load(tiny_cnn.weights, weights_only=True)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, other)
    result = cli("audit-model", audited, tiny_cnn.factory, "--weights", other, "--data", tiny_cnn.data)
    assert result.code == 2 and "was built from a model with sha256" in result.err
    artifact = next((audited / "attack-test").glob("*.int8.onnx"))
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    result = cli("audit-model", audited, config)
    assert result.code == 2 and "differs from the manifest's sha256" in result.err


def test_attacks_off_craft_nothing(tiny_cnn, tmp_path: Path) -> None:  # noqa: ANN001
    from edgekit.config import AttacksSection, BuildConfig, DataSection, ModelSection
    from edgekit.pipeline import SilentReporter
    from edgekit.pipeline.inputs import BuildInputs
    from edgekit.pipeline.prepare import prepare

    config = BuildConfig(model=ModelSection(factory=tiny_cnn.factory, weights=str(tiny_cnn.weights)),
                         data=DataSection(path=str(tiny_cnn.data), calibration_size=32),
                         attacks=AttacksSection(enabled=False))
    prepared = prepare(BuildInputs(config, [], tiny_cnn.data, tmp_path), SilentReporter())
    assert prepared.attacks is None
