"""Bad input fails with a clear EdgekitError before any training starts; interruptions leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

import torch


@pytest.mark.parametrize("value", ["0", "1", "-0.2", "1.5"])
def test_sparsity_outside_zero_one_is_refused(workspace, tmp_path: Path, cli, value: str) -> None:
    out = tmp_path / "out"
    result = cli("prune", workspace.factory("tiny_cnn"), "--weights", workspace.cnn_weights, "--train-data",
                 workspace.train, "--sparsity", value, "-o", out)
    assert result.code == 2
    assert "sparsity" in result.err and "Fix the value" in result.err
    assert not out.exists()


def test_unknown_key_in_the_prune_table_is_refused(workspace, tmp_path: Path, cli) -> None:
    config = tmp_path / "edgekit.toml"
    config.write_text(f'[model]\nfactory = "{workspace.models}:tiny_cnn"\n[prune]\nsparsity = 0.5\nsparsty = 0.5\n')
    result = cli("prune", config, "--train-data", workspace.train, "-o", tmp_path / "out")
    assert result.code == 2 and "unknown key 'sparsty'" in result.err


def test_missing_training_data_is_refused(workspace, tmp_path: Path, cli) -> None:
    result = cli("prune", workspace.factory("tiny_cnn"), "--weights", workspace.cnn_weights, "--sparsity", "0.5",
                 "-o", tmp_path / "out")
    assert result.code == 2 and "--train-data" in result.err


def _model(workspace, name, weights=None):
    from edgekit.model import load_factory

    return load_factory(workspace.factory(name), weights, workspace.folder)


def test_unlabelled_data_is_refused_before_training(workspace, recording) -> None:
    from edgekit.compress.config import DistillConfig, PruneConfig
    from edgekit.compress.stage import distill_stage, prune_stage
    from edgekit.data import load_npz
    from edgekit.errors import DataError

    progress = recording()
    with pytest.raises(DataError, match="needs class labels"):
        prune_stage(_model(workspace, "tiny_cnn"), load_npz(workspace.unlabelled), PruneConfig(sparsity=0.5),
                    progress=progress)
    with pytest.raises(DataError, match="alpha = 0.7"):
        distill_stage(_model(workspace, "tiny_cnn"), load_npz(workspace.unlabelled), DistillConfig(width=0.5),
                      base_dir=workspace.folder, progress=progress)
    assert progress.starts == []


def test_soft_targets_alone_need_no_labels(workspace) -> None:
    from edgekit.compress.config import DistillConfig
    from edgekit.compress.stage import distill_stage
    from edgekit.data import load_npz

    result = distill_stage(_model(workspace, "tiny_cnn", workspace.cnn_weights), load_npz(workspace.unlabelled),
                           DistillConfig(width=0.5, alpha=1.0, epochs=1), base_dir=workspace.folder)
    assert "accuracy" not in result.report["student_measured"]  # nothing to score accuracy against


@pytest.mark.parametrize("method", ["unstructured", "structured"])
def test_a_model_without_prunable_layers_is_refused(workspace, recording, method: str) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.stage import prune_stage
    from edgekit.data import load_npz
    from edgekit.errors import UnsupportedModelError

    progress = recording()
    config = PruneConfig(method=method, sparsity=0.5)
    with pytest.raises(UnsupportedModelError, match="no prunable layers"):
        prune_stage(_model(workspace, "no_layers"), load_npz(workspace.train), config, progress=progress)
    assert progress.starts == []


@pytest.mark.parametrize(("student", "message"), [("wrong_input", "does not accept the teacher's inputs"),
                                                  ("wrong_output", "produces outputs of shape")])
def test_a_student_that_does_not_fit_the_teacher_is_refused(workspace, tmp_path: Path, cli, student: str,
                                                            message: str) -> None:
    out = tmp_path / "out"
    result = cli("distill", workspace.factory("tiny_cnn"), "--weights", workspace.cnn_weights, "--student",
                 workspace.factory(student), "--train-data", workspace.train, "-o", out)
    assert result.code == 2, result.err
    assert message in result.err
    assert not out.exists()


def test_a_student_needs_exactly_one_of_factory_and_width(workspace, tmp_path: Path, cli) -> None:
    result = cli("distill", workspace.factory("tiny_cnn"), "--weights", workspace.cnn_weights, "--train-data",
                 workspace.train, "-o", tmp_path / "out")
    assert result.code == 2 and "exactly one of student" in result.err


def test_interrupted_training_leaves_no_output(workspace, tmp_path: Path, recording) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.stage import prune_stage
    from edgekit.data import load_npz

    with pytest.raises(KeyboardInterrupt):
        prune_stage(_model(workspace, "tiny_cnn", workspace.cnn_weights), load_npz(workspace.train),
                    PruneConfig(sparsity=0.5, epochs=5), progress=recording(interrupt_after=1))


def test_interrupted_save_leaves_no_folder_and_keeps_an_old_one(workspace, tmp_path: Path, monkeypatch) -> None:
    from edgekit.compress import stage
    from edgekit.compress.config import PruneConfig
    from edgekit.data import load_npz

    result = stage.prune_stage(_model(workspace, "tiny_cnn", workspace.cnn_weights), load_npz(workspace.train),
                               PruneConfig(sparsity=0.5, epochs=1, steps=1), factory=workspace.factory("tiny_cnn"))
    out = tmp_path / "pruned"

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "save_weights", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage.save(result, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left either

    monkeypatch.undo()
    stage.save(result, out)
    before = (out / "weights.safetensors").read_bytes()
    monkeypatch.setattr(stage, "save_weights", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage.save(result, out)
    assert (out / "weights.safetensors").read_bytes() == before  # the previous output is untouched


def test_a_pt2_model_cannot_be_pruned(workspace, tmp_path: Path) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.stage import export_program, prune_stage
    from edgekit.data import load_npz
    from edgekit.errors import ModelLoadError
    from edgekit.model import load_file

    program = tmp_path / "model.pt2"
    export_program(_model(workspace, "tiny_cnn").module, (torch.rand(2, 1, 8, 8),), program)
    with pytest.raises(ModelLoadError, match="factory"):
        prune_stage(load_file(program), load_npz(workspace.train), PruneConfig(sparsity=0.5))
