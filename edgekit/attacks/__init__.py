"""What attackers see: adversarial robustness and membership-inference leakage of every artifact.

A build crafts one ``AttackSuite`` on the FP32 torch model (``craft``, which
imports torch): FGSM and PGD examples at each eps, a Gaussian-noise and a
contrast corruption of the attacked evaluation samples, and a set of training
samples (members) to compare with held-out ones (non-members). Every artifact
then runs the same inputs in its own runtime (``assess``, no torch), so each
gets clean accuracy, robust accuracy per attack and eps, the drop against
FP32's own robust accuracy, and the AUC of a loss-threshold membership
attack with a bootstrap interval (``membership``).

What the transfer attack shows: how much more easily an artifact is fooled
than the FP32 model by inputs that fool (or nearly fool) the FP32 model. It
is not a white-box attack on the artifact: an attacker with the artifact's
gradients, or one that queries it many times, can do better, so a robust
accuracy here is an upper bound. Likewise a membership AUC near 0.5 bounds
only this attack, not every membership inference.
"""

from __future__ import annotations

from edgekit.attacks.suite import AttackSet, AttackSuite, Observation

__all__ = ["AttackSet", "AttackSuite", "Observation"]
