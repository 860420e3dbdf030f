"""Fixtures for the attack checks: the shipped digits MLP with its real data, an overfit twin, ONNX exports."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MLP_CONFIG = ROOT / "sample_models" / "mlp" / "edgekit.toml"


@dataclass(frozen=True)
class Digits:
    """The digits MLP sample as a build sees it: model, split, training data."""

    model: object  # edgekit.model.LoadedModel
    split: object  # edgekit.data.Split
    train: object  # edgekit.data.Dataset
    config: object  # edgekit.config.BuildConfig


@pytest.fixture(scope="session")
def digits() -> Digits:
    from edgekit.config import load_build_config
    from edgekit.data import bind_inputs, load_npz, split
    from edgekit.model import load_factory

    config = load_build_config(MLP_CONFIG)
    model = load_factory(config.model.factory, config.resolve(config.model.weights), config.base_dir)
    names = list(model.input_names)
    data = bind_inputs(load_npz(config.resolve(config.data.path)), names, "holdout")
    train = bind_inputs(load_npz(config.resolve(config.data.train)), names, "train")
    return Digits(model, split(data, config.data.calibration_size, None, config.data.seed), train, config)


@pytest.fixture(scope="session")
def overfit(digits: Digits) -> Digits:
    """The MLP architecture trained on only 96 training samples for 400 full-batch epochs: it memorises them."""
    import dataclasses

    import torch

    from edgekit.model import LoadedModel

    torch.manual_seed(0)
    module = type(digits.model.module)().train()
    members = digits.train.take(np.arange(96))
    x, y = torch.from_numpy(members.inputs["x"]), torch.from_numpy(members.y)
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(400):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimiser.step()
    model = LoadedModel(module.eval(), digits.model.input_names, "factory", "overfit digits MLP", "0" * 64)
    return dataclasses.replace(digits, model=model, train=members)


@pytest.fixture(scope="session")
def export_onnx(tmp_path_factory: pytest.TempPathFactory) -> Callable[[object, str], Path]:
    """Export a LoadedModel to an FP32 ONNX file with a dynamic batch (legacy exporter: fast and deterministic)."""
    folder = tmp_path_factory.mktemp("attack_onnx")

    def export(model: object, name: str) -> Path:
        import torch

        path = folder / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model.module, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
        return path

    return export
