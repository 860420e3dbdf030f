"""Membership inference by a loss (or confidence) threshold, with a bootstrap interval of its AUC.

The attacker holds a sample and the model's output for it, and guesses
"member" when the model is unusually sure of it: the per-sample loss
against its label is low (or, without labels, the top confidence is high).
The AUC of that score between training samples and held-out samples is the
attack's success over every threshold (0.5: no better than a coin); the
advantage is the best threshold's true-positive minus false-positive rate.
No torch here.
"""

from __future__ import annotations

import numpy as np

LOSS = "loss"
CONFIDENCE = "confidence"


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows of class probabilities: ``scores`` as they are when they already are (softmax output), else softmax."""
    rows = scores.reshape(len(scores), -1).astype(np.float64)
    if rows.min(initial=0.0) >= 0 and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
        return rows
    shifted = rows - rows.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def member_scores(scores: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Higher means "more likely a member": minus the cross-entropy loss, or the top probability without labels."""
    probs = probabilities(scores)
    if labels is None:
        return probs.max(axis=1)
    picked = probs[np.arange(len(probs)), labels.astype(np.int64)]
    return np.log(np.maximum(picked, 1e-30))


def auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """P(member score > non-member score) + half the ties: the ROC AUC, computed exactly by sorting."""
    ordered = np.sort(non_members)
    below = np.searchsorted(ordered, members, side="left")
    equal = np.searchsorted(ordered, members, side="right") - below
    return float((below.sum() + 0.5 * equal.sum()) / (len(members) * len(non_members)))


def advantage(members: np.ndarray, non_members: np.ndarray) -> float:
    """max over thresholds t of TPR(t) - FPR(t), guessing "member" when the score is >= t."""
    thresholds = np.unique(np.concatenate([members, non_members]))
    tpr = 1.0 - np.searchsorted(np.sort(members), thresholds, side="left") / len(members)
    fpr = 1.0 - np.searchsorted(np.sort(non_members), thresholds, side="left") / len(non_members)
    return float(max(0.0, (tpr - fpr).max(initial=0.0)))


def bootstrap_auc(members: np.ndarray, non_members: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the AUC, resampling members and non-members separately (seeded)."""
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for i in range(resamples):
        values[i] = auc(rng.choice(members, len(members)), rng.choice(non_members, len(non_members)))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def attack(members: np.ndarray, non_members: np.ndarray, resamples: int, seed: int) -> dict[str, float]:
    """AUC, its 95 % interval and the advantage of the threshold attack on these member / non-member scores."""
    low, high = bootstrap_auc(members, non_members, resamples, seed)
    return {"auc": auc(members, non_members), "auc_ci95_low": low, "auc_ci95_high": high,
            "advantage": advantage(members, non_members)}
