"""Run a model on an attack suite and sum up what attackers achieve against it. No torch here.

``observe`` runs any model (an artifact's session, or the FP32 torch model
through a runner) over the suite's sets and keeps per-sample results;
``summarise`` turns one observation, judged against FP32's on the same
samples, into flat metrics (for budgets and the table) and a structured
record (for the manifest and the report's plot).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.attacks import membership
from edgekit.attacks.suite import ADVERSARIAL, CORRUPTIONS, CRAFTED_ON, AttackSuite, Observation
from edgekit.fidelity import wilson_interval

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def _top1(outputs: list[np.ndarray]) -> np.ndarray:
    return outputs[0].reshape(len(outputs[0]), -1).argmax(axis=1)


def _take(inputs: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[indices] for name, values in inputs.items()}


def uses_loss(suite: AttackSuite) -> bool:
    """The membership score is the loss when members and non-members both have labels, else the confidence."""
    return suite.members is not None and suite.members.labelled and suite.clean.labelled


def observe(run: Runner, suite: AttackSuite, count: int | None = None) -> Observation:
    """Run ``run`` on the first ``count`` attacked samples (all when None) of every set, and as many members."""
    indices = np.arange(len(suite.clean) if count is None else min(count, len(suite.clean)))
    targets = suite.targets[indices]
    clean = run(_take(suite.clean.inputs, indices))
    sets = {s.name: _top1(run(_take(s.inputs, indices))) == targets for s in suite.sets}
    if suite.members is None:
        return Observation(indices, _top1(clean) == targets, sets)
    loss = uses_loss(suite)
    member_indices = np.arange(len(suite.members) if count is None else min(count, len(suite.members)))
    members = run(_take(suite.members.inputs, member_indices))[0]
    member_scores = membership.member_scores(members, suite.members.y[member_indices] if loss else None)  # type: ignore[index]
    non_member_scores = membership.member_scores(clean[0], suite.clean.y[indices] if loss else None)  # type: ignore[index]
    return Observation(indices, _top1(clean) == targets, sets, member_scores, non_member_scores, member_indices)


def _robust_accuracy(observation: Observation, suite: AttackSuite) -> float:
    """The worst adversarial accuracy at the judged eps."""
    return min(float(observation.set_correct[f"{kind}@{suite.judged_eps:g}"].mean()) for kind in ADVERSARIAL)


def _robustness(observation: Observation, fp32: Observation | None, suite: AttackSuite) -> tuple[dict[str, float], dict[str, Any]]:
    correct = observation.set_correct
    robust = _robust_accuracy(observation, suite)
    clean = float(observation.clean_correct.mean())
    record: dict[str, Any] = {
        "clean_accuracy": clean,
        "accuracy": {kind: [float(correct[f"{kind}@{eps:g}"].mean()) for eps in suite.eps] for kind in ADVERSARIAL},
        "corruptions": {kind: float(correct[f"{kind}@{suite.judged_eps:g}"].mean()) for kind in CORRUPTIONS},
        "robust_accuracy": robust,
        "attack_loss": clean - robust,
    }
    worst = min(ADVERSARIAL, key=lambda kind: correct[f"{kind}@{suite.judged_eps:g}"].mean())
    low, high = wilson_interval(int(correct[f"{worst}@{suite.judged_eps:g}"].sum()), len(observation.indices))
    metrics = {"robust_accuracy": robust, "robust_accuracy_ci95_low": low, "robust_accuracy_ci95_high": high,
               **{f"{kind}_accuracy": value for kind, value in record["corruptions"].items()}}
    if fp32 is not None:
        baseline = _robust_accuracy(fp32, suite)
        record.update(fp32_robust_accuracy=baseline, fp32_attack_loss=float(fp32.clean_correct.mean()) - baseline)
        metrics["robust_accuracy_drop"] = record["robust_accuracy_drop"] = baseline - robust
    return metrics, record


def _membership(observation: Observation, fp32: Observation | None, suite: AttackSuite) -> tuple[dict[str, float], dict[str, Any]]:
    seed, resamples = suite.settings.get("seed", 0), suite.settings.get("bootstrap", 200)
    found = membership.attack(observation.member_scores, observation.non_member_scores, resamples, seed)  # type: ignore[arg-type]
    record: dict[str, Any] = {
        "auc": found["auc"], "auc_ci95": [found["auc_ci95_low"], found["auc_ci95_high"]],
        "advantage": found["advantage"], "members": len(observation.member_scores),  # type: ignore[arg-type]
        "non_members": len(observation.non_member_scores),  # type: ignore[arg-type]
        "score": membership.LOSS if uses_loss(suite) else membership.CONFIDENCE,
    }
    if fp32 is not None:
        record["fp32_auc"] = membership.auc(fp32.member_scores, fp32.non_member_scores)  # type: ignore[arg-type]
    return {f"membership_{key}": value for key, value in found.items()}, record


def summarise(observation: Observation, fp32: Observation | None,
              suite: AttackSuite) -> tuple[dict[str, float], dict[str, Any]]:
    """Flat metrics and the structured record of one observation; FP32 is restricted to the same samples."""
    if fp32 is not None:
        fp32 = fp32.restricted(observation.indices, observation.member_indices)
    metrics: dict[str, float] = {"attacked_samples": float(len(observation.indices))}
    record: dict[str, Any] = {"samples": len(observation.indices)}
    if suite.robustness_skipped is None and observation.set_correct:
        found, record["robustness"] = _robustness(observation, fp32, suite)
        metrics.update(found)
    if observation.member_scores is not None:
        found, record["membership"] = _membership(observation, fp32, suite)
        metrics.update(found)
    return metrics, record


def assess(run: Runner, suite: AttackSuite, count: int | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """``observe`` then ``summarise`` against the suite's FP32 observation."""
    return summarise(observe(run, suite, count), suite.fp32, suite)


def describe(suite: AttackSuite) -> dict[str, Any]:
    """The manifest's top-level ``attacks`` record: how the suite was made, and FP32's own figures."""
    record: dict[str, Any] = {"crafted_on": CRAFTED_ON, "targets": suite.target_source, "samples": len(suite.clean),
                              **suite.settings}
    if suite.robustness_skipped is None:
        record.update(eps=list(suite.eps), judged_eps=suite.judged_eps, attacks=list(ADVERSARIAL),
                      corruptions=list(CORRUPTIONS))
    else:
        record["robustness_skipped"] = suite.robustness_skipped
    if suite.members is not None:
        record["members"] = len(suite.members)
    else:
        record["membership_skipped"] = suite.membership_skipped
    if suite.fp32 is not None:
        record["fp32"] = summarise(suite.fp32, None, suite)[1]
    return record
