"""Crafting the suite on a real model: perturbations stay in bounds, stronger attacks hurt more, skips say why."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgekit.attacks.assess import describe
from edgekit.attacks.craft import craft_suite
from edgekit.config import AttacksSection
from edgekit.data import Dataset


@pytest.fixture(scope="module")
def suite(digits):  # noqa: ANN001, ANN201 - fixture
    return craft_suite(digits.model, digits.split, digits.train, AttacksSection(samples=128), classes=True)


def test_default_eps_are_fractions_of_the_data_range_and_the_middle_is_judged(suite) -> None:  # noqa: ANN001
    assert suite.eps == (0.01, 0.03, 0.1)  # digits lie in [0, 1]
    assert suite.judged_eps == 0.03
    assert {s.name for s in suite.sets} == {f"{k}@{e:g}" for k in ("fgsm", "pgd") for e in suite.eps} | \
        {"noise@0.03", "contrast@0.03"}


def test_adversarial_inputs_stay_in_the_eps_ball_and_the_data_box(suite, digits) -> None:  # noqa: ANN001
    clean = suite.clean.inputs["x"]
    low, high = digits.split.calibration.inputs["x"].min(), digits.split.calibration.inputs["x"].max()
    for attack in suite.sets:
        x = attack.inputs["x"]
        assert x.dtype == clean.dtype and x.shape == clean.shape
        assert x.min() >= low and x.max() <= high
        if attack.kind in ("fgsm", "pgd"):
            assert np.abs(x - clean).max() <= attack.eps + 1e-6
            assert np.abs(x - clean).max() > attack.eps / 2  # the attack moved the inputs


def test_accuracy_falls_with_eps_and_pgd_is_at_least_as_strong_as_fgsm(suite) -> None:  # noqa: ANN001
    correct = suite.fp32.set_correct
    clean = suite.fp32.clean_correct.mean()
    for kind in ("fgsm", "pgd"):
        curve = [correct[f"{kind}@{e:g}"].mean() for e in suite.eps]
        assert clean >= curve[0] >= curve[1] >= curve[2]
    assert correct["pgd@0.1"].mean() <= correct["fgsm@0.1"].mean()
    assert correct["pgd@0.1"].mean() < clean - 0.3  # eps = 10 % of the range breaks this MLP


def test_given_eps_and_judged_eps_are_used(digits) -> None:  # noqa: ANN001
    config = AttacksSection(samples=32, eps=[0.2, 0.05], judged_eps=0.2, pgd_steps=2)
    made = craft_suite(digits.model, digits.split, None, config, classes=True)
    assert made.eps == (0.05, 0.2) and made.judged_eps == 0.2
    assert made.members is None and "no training data" in made.membership_skipped


def test_bad_eps_settings_are_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="every eps must be > 0"):
        AttacksSection(eps=[0.1, -0.1])
    with pytest.raises(ValidationError, match="judged_eps 0.5 is not one of eps"):
        AttacksSection(eps=[0.1, 0.2], judged_eps=0.5)


def test_integer_inputs_skip_robustness_but_keep_membership(token_encoder) -> None:  # noqa: ANN001
    from edgekit.data import bind_inputs, load_npz, split
    from edgekit.model import load_factory

    model = load_factory(token_encoder.factory, token_encoder.weights, token_encoder.folder)
    data = bind_inputs(load_npz(token_encoder.data), list(model.input_names), "data")
    train = dataclasses.replace(data.take(np.arange(32)), sha256="another file")
    made = craft_suite(model, split(data, 16, None, 0), train, AttacksSection(samples=16), classes=True)
    assert "no float inputs" in made.robustness_skipped and not made.sets
    assert made.members is not None and made.target_source == "fp32 top-1"
    assert "robustness" not in describe(made)["fp32"] and "membership" in describe(made)["fp32"]


def test_other_outputs_and_the_same_file_skip_with_reasons(digits) -> None:  # noqa: ANN001
    made = craft_suite(digits.model, digits.split, digits.split.evaluation, AttacksSection(samples=16), classes=False)
    assert "not known to be class scores" in made.robustness_skipped
    assert "not known to be class scores" in made.membership_skipped
    same = Dataset(digits.split.evaluation.inputs, digits.split.evaluation.y, sha256=digits.split.evaluation.sha256)
    made = craft_suite(digits.model, digits.split, same, AttacksSection(samples=16), classes=True)
    assert "same file" in made.membership_skipped


def test_a_model_torch_cannot_differentiate_is_reported_not_fatal(digits) -> None:  # noqa: ANN001
    import torch

    from edgekit.model import LoadedModel

    class Votes(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(x.flatten(1)[:, :10].argmax(1), 10).float()

    model = LoadedModel(Votes(), ("x",), "factory", "argmax votes", "0" * 64)
    made = craft_suite(model, digits.split, digits.train, AttacksSection(samples=16), classes=True)
    assert made.robustness_skipped.startswith("crafting on the FP32 torch model failed: RuntimeError")
    assert made.members is not None  # membership does not need gradients


def test_a_costly_model_is_attacked_on_fewer_samples() -> None:
    from edgekit.attacks.craft import MIN_SAMPLES, attacked_count

    config = AttacksSection()
    assert attacked_count(config, 540, 70_000) == 256  # the digits MLP: the configured count
    assert attacked_count(config, 540, 24_735_616) == 40  # the MobileNet sample: about 1e11 MACs of crafting
    assert attacked_count(config, 540, 300_000_000) == MIN_SAMPLES  # a 224x224 MobileNetV2
    assert attacked_count(config, 20, None) == 20
