"""Structured pruning: fewer channels and heads, fewer MACs, a dense .pt2 that loads and runs in onnxruntime."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import torch
import torch_pruning  # noqa: F401


def _load(workspace, name):
    from edgekit.model import load_factory

    return load_factory(workspace.factory(name), None, workspace.folder)


def test_structured_pruning_halves_macs_across_residuals_bn_and_depthwise(workspace, tmp_path: Path) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.measure import onnx_model_bytes, run_onnx
    from edgekit.compress.stage import prune_stage, save
    from edgekit.compress.train import count_macs
    from edgekit.data import load_npz
    from edgekit.model import load_file

    model = _load(workspace, "tiny_mobile")
    config = PruneConfig(method="structured", macs_ratio=0.5, steps=2, epochs_per_step=1, epochs=1)
    result = prune_stage(model, load_npz(workspace.train), config, evaluation=load_npz(workspace.holdout))
    before, after = result.report["before"], result.report["after"]
    assert after["macs"] <= 0.5 * before["macs"]
    assert after["params"] < before["params"]
    assert after["onnx_bytes"] < 0.75 * before["onnx_bytes"]
    pruned = result.module
    assert pruned.classifier.out_features == 10, "the output layer keeps its classes"
    for module in pruned.modules():
        if isinstance(module, torch.nn.Conv2d) and module.out_channels > 1:
            assert module.out_channels % 8 == 0, module  # round_to=8
    depthwise = pruned.blocks[0].block[3]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels

    out = tmp_path / "structured"
    model_file = save(result, out)
    assert model_file.name == "model.pt2"
    loaded = load_file(model_file)  # what `edgekit build OUT/model.pt2` loads
    x = torch.from_numpy(np.load(workspace.holdout)["x"][:5])
    with torch.no_grad():
        expected = pruned(x)
        for batch in (1, 5):  # dynamic batch
            torch.testing.assert_close(loaded.module(x[:batch]), expected[:batch], rtol=1e-4, atol=1e-4)
    assert count_macs(loaded.module, (x[:1],)) == after["macs"]
    onnx_out = run_onnx(onnx_model_bytes(loaded.module, (x[:1],), ("x",)), {"x": x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_structured_pruning_removes_whole_attention_heads(workspace) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.stage import prune_stage
    from edgekit.data import load_npz

    model = _load(workspace, "tiny_attention")
    config = PruneConfig(method="structured", sparsity=0.5, steps=1, epochs=1, round_to=None)
    result = prune_stage(model, load_npz(workspace.train), config)
    attention = result.module.attn
    assert attention.heads == 2 and attention.head_dim == 8
    assert attention.q.out_features == attention.k.out_features == attention.v.out_features == 16
    assert attention.out.in_features == 16
    with torch.no_grad():
        assert result.module(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert result.report["after"]["macs"] < result.report["before"]["macs"]


def test_an_output_fed_by_a_residual_stream_keeps_its_width(workspace) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.stage import prune_stage
    from edgekit.data import load_npz

    model = _load(workspace, "tiny_encoder")
    config = PruneConfig(method="structured", sparsity=0.5, steps=1, epochs=1, round_to=None)
    result = prune_stage(model, load_npz(workspace.train), config)
    with torch.no_grad():
        logits, embedding = result.module(torch.rand(3, 1, 8, 8))
    assert logits.shape == (3, 10) and embedding.shape == (3, 32)
    assert {"attn.out", "mlp.2"} <= set(result.report["ignored"])  # the stream's writers were left whole
    assert result.module.attn.heads == 2  # heads were still pruned
    assert result.module.mlp[0].out_features == 32  # and the MLP's hidden layer


def test_stream_writers_are_protected_when_pruning_would_change_an_output(workspace) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.structured import output_shapes, protect_outputs, shrink
    from edgekit.errors import UnsupportedModelError

    model = _load(workspace, "tiny_encoder").module
    example = (torch.rand(1, 1, 8, 8),)
    # Nothing but the stream's writers may be pruned: without protection the embedding would narrow.
    config = PruneConfig(method="structured", sparsity=0.5, round_to=None)
    with pytest.raises(UnsupportedModelError, match="output shapes"):
        shrink(copy.deepcopy(model), example, config, 0.5)
    protected = protect_outputs(model, example, config, 0.5)
    assert {"attn.out", "mlp.2"} <= set(protected.ignore)
    assert output_shapes(shrink(model, example, protected, 0.5), example) == [(1, 10), (1, 32)]


def test_keep_residual_streams_prunes_inside_the_blocks_only(workspace) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.structured import ratio_for_macs, shrink
    from edgekit.compress.train import count_macs

    model = _load(workspace, "tiny_mobile").module
    example = (torch.rand(1, 1, 8, 8),)
    config = PruneConfig(method="structured", macs_ratio=0.6, steps=1, keep_residual_streams=True)
    ratio, achieved = ratio_for_macs(model, example, config, 0.6)
    pruned = shrink(copy.deepcopy(model), example, config, ratio)
    assert count_macs(pruned, example) <= 0.6 * count_macs(model, example)
    assert pruned.stem[0].out_channels == 16  # the residual stream joined by both blocks' adds
    assert all(block.block[6].out_channels == 16 for block in pruned.blocks)
    assert all(block.block[0].out_channels < 64 for block in pruned.blocks)  # the expanded channels went


def test_macs_target_search_meets_the_target(workspace) -> None:
    from edgekit.compress.config import PruneConfig
    from edgekit.compress.structured import ratio_for_macs

    model = _load(workspace, "tiny_mobile").module
    config = PruneConfig(method="structured", macs_ratio=0.6, steps=1)
    ratio, achieved = ratio_for_macs(model, (torch.rand(1, 1, 8, 8),), config, 0.6)
    assert 0 < ratio < 0.9 and achieved <= 0.6


def test_prune_cli_structured_writes_a_pt2(workspace, tmp_path: Path, cli) -> None:
    import json

    out = tmp_path / "cli-structured"
    result = cli("prune", workspace.factory("tiny_mobile"), "--train-data", workspace.train, "--method", "structured",
                 "--macs-ratio", "0.5", "--round-to", "16", "--global-ranking", "--epochs", "1", "--latency-runs", "0",
                 "-o", out, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["config"]["round_to"] == 16 and report["config"]["global_pruning"] is True
    assert report["after"]["macs"] <= 0.5 * report["before"]["macs"]
    assert (out / "model.pt2").is_file() and 'path = "model.pt2"' in (out / "edgekit.toml").read_text()
