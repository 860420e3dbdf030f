"""The attack suite a build crafts once, and what one model did on it, sample by sample. No torch here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.data import Dataset

# Default eps as fractions of the calibration data's range: for images in [0, 1] these are about 2.5, 8 and
# 25 grey levels of 255, the span between "imperceptible" and "plainly visible".
DEFAULT_EPS_FRACTIONS = (0.01, 0.03, 0.1)
ADVERSARIAL = ("fgsm", "pgd")
CORRUPTIONS = ("noise", "contrast")
CONTRAST = 0.5  # the contrast corruption halves each sample's deviations from its own mean
CRAFTED_ON = "the FP32 torch model (transfer attack: the artifact's own gradients are not used)"


@dataclass(frozen=True)
class AttackSet:
    """One perturbed copy of the attacked samples: an attack at an eps, or a corruption."""

    kind: str  # one of ADVERSARIAL or CORRUPTIONS
    eps: float
    inputs: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.eps:g}"


@dataclass(frozen=True)
class AttackSuite:
    """Everything every artifact is run on, plus how it was made.

    ``clean``: the attacked evaluation samples, which are also the
    membership attack's non-members. ``targets``: what "correct" means on
    them (the labels, or the FP32 model's top class without labels).
    ``members``: training samples, when ``[data] train`` was given. A part
    that could not be made says why in ``robustness_skipped`` /
    ``membership_skipped``. ``fp32``: the FP32 torch model's own observation,
    the baseline every artifact's drop is measured against. The manifest
    describes it with ``edgekit.attacks.assess.describe``.
    """

    clean: Dataset
    targets: np.ndarray
    target_source: str  # "labels" | "fp32 top-1"
    eps: tuple[float, ...] = ()
    judged_eps: float | None = None
    sets: tuple[AttackSet, ...] = ()
    members: Dataset | None = None
    robustness_skipped: str | None = None
    membership_skipped: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    fp32: Observation | None = None
    craft_seconds: float = 0.0  # how long crafting took here (the build log's, never the manifest's)


@dataclass(frozen=True)
class Observation:
    """What one model computed on a suite, per sample: right or wrong on each set, and membership scores.

    ``indices``: which of the suite's attacked samples (and members) were run
    (all of them, or a bounded subset for an emulated artifact).
    """

    indices: np.ndarray
    clean_correct: np.ndarray
    set_correct: dict[str, np.ndarray]
    member_scores: np.ndarray | None = None
    non_member_scores: np.ndarray | None = None
    member_indices: np.ndarray | None = None

    def restricted(self, indices: np.ndarray, member_indices: np.ndarray | None) -> Observation:
        """The same observation on a subset (given as suite indices that this observation covers)."""
        where = np.searchsorted(self.indices, indices)
        members = None
        if self.member_scores is not None and member_indices is not None:
            members = self.member_scores[np.searchsorted(self.member_indices, member_indices)]  # type: ignore[arg-type]
        return Observation(indices, self.clean_correct[where], {k: v[where] for k, v in self.set_correct.items()},
                           members, None if self.non_member_scores is None else self.non_member_scores[where],
                           member_indices if members is not None else None)
