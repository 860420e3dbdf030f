"""The membership attack's statistics, checked against sklearn and against cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from edgekit.attacks import membership


def test_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    members = np.round(rng.normal(0.3, 1, 300), 1)  # rounding makes many ties
    non_members = np.round(rng.normal(0.0, 1, 200), 1)
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[members, non_members])
    assert membership.auc(members, non_members) == pytest.approx(expected, abs=1e-12)


def test_separated_scores_give_auc_one_and_full_advantage() -> None:
    members, non_members = np.array([2.0, 3.0, 4.0]), np.array([-1.0, 0.0, 1.0])
    assert membership.auc(members, non_members) == 1.0
    assert membership.advantage(members, non_members) == 1.0
    assert membership.auc(non_members, members) == 0.0


def test_identical_distributions_give_auc_near_half_inside_the_interval() -> None:
    rng = np.random.default_rng(1)
    members, non_members = rng.normal(size=400), rng.normal(size=400)
    found = membership.attack(members, non_members, resamples=300, seed=0)
    assert found["auc_ci95_low"] < 0.5 < found["auc_ci95_high"]
    assert found["auc_ci95_low"] <= found["auc"] <= found["auc_ci95_high"]
    assert 0.0 <= found["advantage"] < 0.15


def test_interval_narrows_with_more_samples() -> None:
    rng = np.random.default_rng(2)
    small = membership.bootstrap_auc(rng.normal(0.5, 1, 50), rng.normal(size=50), 300, 0)
    large = membership.bootstrap_auc(rng.normal(0.5, 1, 2000), rng.normal(size=2000), 300, 0)
    assert large[1] - large[0] < (small[1] - small[0]) / 3


def test_scores_use_the_loss_with_labels_and_the_confidence_without() -> None:
    logits = np.array([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    with_labels = membership.member_scores(logits, np.array([0, 0]))
    assert with_labels == pytest.approx(np.log([probs[0, 0], probs[1, 0]]))
    assert membership.member_scores(logits, None) == pytest.approx(probs.max(axis=1))
    # A model that already outputs probabilities is not softmaxed twice.
    assert membership.member_scores(probs, np.array([0, 0])) == pytest.approx(with_labels)
