"""Unstructured pruning: the schedule, exact global masks, and a pruned model that is sparser, smaller once
compressed, loadable by `edgekit build`'s loader and still runs in onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import torch


def test_cubic_schedule_rises_fast_then_slowly_to_the_target() -> None:
    from edgekit.compress.prune import cubic_sparsity, event_epochs

    values = [cubic_sparsity(k, 5, 0.8) for k in range(1, 6)]
    assert values == sorted(values)
    assert values[-1] == pytest.approx(0.8)
    assert values[0] > 0.8 / 5  # front-loaded
    assert event_epochs(10, 5, 0.6) == [1, 2, 3, 4, 5]
    assert event_epochs(3, 5, 1.0)[-1] <= 3


def test_global_masks_drop_exactly_the_smallest_weights() -> None:
    from edgekit.compress.prune import global_magnitude_masks

    torch.manual_seed(0)
    layers = [("a", torch.nn.Linear(10, 20)), ("b", torch.nn.Conv2d(3, 4, 3))]
    masks = global_magnitude_masks(layers, 0.75)
    total = sum(m.weight.numel() for _, m in layers)
    assert sum(int((~mask).sum()) for mask in masks.values()) == round(0.75 * total)
    kept = torch.cat([m.weight.abs()[masks[n]] for n, m in layers])
    dropped = torch.cat([m.weight.abs()[~masks[n]] for n, m in layers])
    assert dropped.max() <= kept.min()


def _load_tiny(workspace, weights=None):
    from edgekit.model import load_factory

    return load_factory(workspace.factory("tiny_cnn"), weights or workspace.cnn_weights, workspace.folder)


def test_unstructured_pruning_realises_sparsity_and_runs(workspace, tmp_path: Path, recording) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.measure import onnx_model_bytes, run_onnx, weight_sparsity
    from edgekit.compress.stage import prune_stage, save
    from edgekit.config import load_build_config
    from edgekit.data import load_npz
    from edgekit.model import load_factory

    model = _load_tiny(workspace)
    progress = recording()
    config = PruneConfig(sparsity=0.8, epochs=4, steps=3, seed=0)
    result = prune_stage(model, load_npz(workspace.train), config, factory=workspace.factory("tiny_cnn"),
                         evaluation=load_npz(workspace.holdout), progress=progress)
    assert progress.messages, "training reports progress"
    assert weight_sparsity(result.module) == pytest.approx(0.8, abs=1e-3)
    assert weight_sparsity(model.module) == 0.0, "the input model is never changed"
    before, after = result.report["before"], result.report["after"]
    assert after["onnx_bytes"] == pytest.approx(before["onnx_bytes"], rel=0.01)  # zeros alone do not shrink the file
    assert after["onnx_gzip_bytes"] < 0.6 * before["onnx_gzip_bytes"]  # ...but they compress
    assert after["accuracy"] >= before["accuracy"] - 0.1

    out = tmp_path / "pruned"
    model_file = save(result, out)
    assert model_file.name == "weights.safetensors"
    report = json.loads((out / "compression.json").read_text())
    assert report["output"]["kind"] == "factory+safetensors"
    config_file = load_build_config(out / "edgekit.toml")  # what `edgekit build OUT/edgekit.toml` reads
    reloaded = load_factory(config_file.model.factory, config_file.resolve(config_file.model.weights), out)
    assert weight_sparsity(reloaded.module) == pytest.approx(0.8, abs=1e-3)

    x = np.load(workspace.holdout)["x"][:5]
    onnx_out = run_onnx(onnx_model_bytes(reloaded.module, (torch.from_numpy(x[:1]),), ("x",)), {"x": x})[0]
    with torch.no_grad():
        expected = reloaded.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_out, expected, rtol=1e-4, atol=1e-4)


def test_pruning_is_deterministic(workspace) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.stage import prune_stage
    from edgekit.data import load_npz

    config = PruneConfig(sparsity=0.5, epochs=2, steps=2, seed=3, augment_shift=1)
    data = load_npz(workspace.train)
    first = prune_stage(_load_tiny(workspace), data, config).module.state_dict()
    second = prune_stage(_load_tiny(workspace), data, config).module.state_dict()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_prune_cli_writes_a_buildable_folder(workspace, tmp_path: Path, cli) -> None:
    out = tmp_path / "cli-pruned"
    result = cli("prune", workspace.factory("tiny_cnn"), "--weights", workspace.cnn_weights, "--train-data",
                 workspace.train, "--data", workspace.holdout, "--sparsity", "0.8", "--epochs", "2",
                 "--latency-runs", "5", "-o", out, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["after"]["weight_sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert report["after"]["latency_ms"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["compression.json", "edgekit.toml", "weights.safetensors"]


def test_prune_reads_the_prune_table_of_a_build_config(workspace, tmp_path: Path, cli) -> None:
    config = tmp_path / "edgekit.toml"
    config.write_text(
        f'[model]\nfactory = "{workspace.models}:tiny_cnn"\nweights = "{workspace.cnn_weights}"\n'
        f'[data]\npath = "{workspace.holdout}"\ntrain = "{workspace.train}"\n'
        '[prune]\nmethod = "unstructured"\nsparsity = 0.6\nepochs = 2\nsteps = 2\n'
    )
    out = tmp_path / "from-config"
    result = cli("prune", config, "-o", out, "--latency-runs", "0", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["after"]["weight_sparsity"] == pytest.approx(0.6, abs=1e-3)
