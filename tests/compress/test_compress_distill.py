"""Distillation: the loss, width-derived and factory students, reports and outputs that load and run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import torch


def test_kd_loss_is_cross_entropy_at_alpha_zero_and_zero_for_a_perfect_copy() -> None:
    from edgekit.compress.distill import kd_loss

    torch.manual_seed(0)
    logits, y = torch.randn(6, 10), torch.randint(0, 10, (6,))
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert kd_loss(logits, torch.randn(6, 10), y, 0.0, 4.0) == pytest.approx(ce.item())
    assert kd_loss(logits, logits, y, 1.0, 4.0) == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, logits, None, 0.3, 2.0) == pytest.approx(0.0, abs=1e-6)  # no labels: soft targets only


def test_alpha_schedule_moves_linearly() -> None:
    from edgekit.compress.config import DistillConfig
    from edgekit.compress.distill import alpha_at

    config = DistillConfig(width=0.5, alpha=0.9, alpha_schedule="linear", alpha_start=0.1)
    assert [alpha_at(config, p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.1, 0.5, 0.9])
    assert alpha_at(DistillConfig(width=0.5, alpha=0.7), 0.3) == 0.7


def _teacher(workspace):
    from edgekit.model import load_factory

    return load_factory(workspace.factory("tiny_cnn"), workspace.cnn_weights, workspace.folder)


def test_width_student_is_smaller_keeps_accuracy_and_exports(workspace, tmp_path: Path) -> None:
    from edgekit.compress.config import DistillConfig
    from edgekit.compress.measure import onnx_model_bytes, run_onnx
    from edgekit.compress.stage import distill_stage, save
    from edgekit.data import load_npz
    from edgekit.model import load_file

    config = DistillConfig(width=0.5, epochs=3, augment_shift=1, seed=0)
    result = distill_stage(_teacher(workspace), load_npz(workspace.train), config, base_dir=workspace.folder,
                           evaluation=load_npz(workspace.holdout), baseline=True)
    report = result.report
    assert report["student_measured"]["params"] <= 0.4 * report["teacher"]["params"]
    assert report["student_measured"]["onnx_bytes"] < report["teacher"]["onnx_bytes"]
    assert report["student_measured"]["accuracy"] > 0.5  # a few epochs from the teacher's weights
    assert "accuracy" in report["labels_only"]
    assert 0 < report["ratios"]["accuracy_of_teacher"]

    out = tmp_path / "student"
    model_file = save(result, out)
    assert model_file.name == "model.pt2"
    student = load_file(model_file).module
    x = np.load(workspace.holdout)["x"][:4]
    with torch.no_grad():
        expected = student(torch.from_numpy(x)).numpy()
    got = run_onnx(onnx_model_bytes(student, (torch.from_numpy(x[:1]),), ("x",)), {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_factory_student_writes_weights_for_its_factory(workspace, tmp_path: Path, cli) -> None:
    from edgekit.config import load_build_config
    from edgekit.model import load_factory

    out = tmp_path / "factory-student"
    result = cli("distill", workspace.factory("tiny_cnn"), "--weights", workspace.cnn_weights,
                 "--student", workspace.factory("small_cnn"), "--train-data", workspace.train, "--data",
                 workspace.holdout, "--epochs", "2", "--temperature", "2", "--alpha", "0.9", "--latency-runs", "0",
                 "-o", out, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["student_measured"]["params"] < report["teacher"]["params"]
    assert report["config"]["temperature"] == 2.0
    config = load_build_config(out / "edgekit.toml")
    student = load_factory(config.model.factory, config.resolve(config.model.weights), out)
    assert type(student.module).__name__ == "SmallCNN"


def test_distillation_is_deterministic(workspace) -> None:
    from edgekit.compress.config import DistillConfig
    from edgekit.compress.stage import distill_stage
    from edgekit.data import load_npz

    config = DistillConfig(width=0.5, init="random", epochs=2, augment_shift=1, seed=5)
    runs = [distill_stage(_teacher(workspace), load_npz(workspace.train), config, base_dir=workspace.folder)
            for _ in range(2)]
    first, second = (r.module.state_dict() for r in runs)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_feature_matching_trains_a_projection_but_saves_the_student_alone(workspace) -> None:
    from edgekit.compress.config import DistillConfig
    from edgekit.compress.stage import distill_stage
    from edgekit.data import load_npz

    config = DistillConfig(width=0.5, feature_weight=1.0, epochs=2)
    result = distill_stage(_teacher(workspace), load_npz(workspace.train), config, base_dir=workspace.folder,
                           evaluation=load_npz(workspace.holdout))
    assert not any("projection" in key for key in result.module.state_dict())
    assert not result.module.classifier._forward_hooks  # the feature taps are removed
    assert result.report["student_measured"]["accuracy"] > 0.5
