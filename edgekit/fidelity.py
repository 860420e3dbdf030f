"""Fidelity to the FP32 model: the metrics, and the bar a candidate must clear.

Every artifact is compared with the FP32 torch model's outputs on the same
inputs, labels or not. These functions are the one definition of each metric:
validation uses them on the evaluation split, and backends use them (through
``FidelityTarget``) on the calibration split while they search for a recipe
that clears the bar (a static INT8 that keeps the most damaging layers in
float, say). No torch, no runtime here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def _rows(array: np.ndarray) -> np.ndarray:
    return array.reshape(len(array), -1).astype(np.float64)


def top1_agreement(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """How often the artifact's top class (of the first output) equals the FP32 model's."""
    return float(np.mean(_rows(outputs[0]).argmax(axis=1) == _rows(reference[0]).argmax(axis=1)))


def per_sample_cosine(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample's flattened output with the reference's (1 where both are zero)."""
    a, b = _rows(output), _rows(reference)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    sims = (a * b).sum(axis=1) / np.maximum(denom, 1e-30)
    return np.where(both_zero, 1.0, np.where(denom > 0, sims, 0.0))


def cosine(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Mean per-sample cosine similarity to the reference, worst over outputs."""
    return min(float(per_sample_cosine(o, r).mean()) for o, r in zip(outputs, reference, strict=True))


def max_abs_error(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    return float(max(np.abs(o.astype(np.float64) - r).max() for o, r in zip(outputs, reference, strict=True)))


def sqnr_db(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Signal-to-quantization-noise ratio over all outputs, in dB (higher is better; inf when exact)."""
    signal = sum(float(np.sum(np.square(r.astype(np.float64)))) for r in reference)
    noise = sum(float(np.sum(np.square(o.astype(np.float64) - r))) for o, r in zip(outputs, reference, strict=True))
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(max(signal, 1e-30) / noise))


def has_classes(outputs: list[np.ndarray]) -> bool:
    """Whether the first output has a "top class" at all (two or more scores per sample)."""
    return _rows(outputs[0]).shape[1] >= 2


def measure(outputs: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    """Cosine, SQNR, max abs error and (when there are classes) top-1 agreement; only finite values."""
    metrics: dict[str, float] = {}
    functions: dict[str, Callable[[list[np.ndarray], list[np.ndarray]], float]] = {
        "cosine": cosine, "sqnr_db": sqnr_db, "max_abs_error": max_abs_error,
    }
    if has_classes(reference):
        functions["top1_agreement"] = top1_agreement
    for name, fn in functions.items():
        value = fn(outputs, reference)
        if np.isfinite(value):  # exact outputs have no finite SQNR; JSON has no inf
            metrics[name] = value
    return metrics


Z95 = 1.959964  # two-sided 95 % normal quantile


def wilson_interval(successes: int, count: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound at 0 % and 100 %, unlike the normal one)."""
    if count == 0:
        return 0.0, 1.0
    p = successes / count
    denom = 1 + Z95**2 / count
    centre = (p + Z95**2 / (2 * count)) / denom
    half = Z95 * np.sqrt(p * (1 - p) / count + Z95**2 / (4 * count**2)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def intervals(outputs: list[np.ndarray], reference: list[np.ndarray] | None,
              labels: np.ndarray | None = None) -> dict[str, float]:
    """95 % confidence intervals of accuracy, top-1 agreement and mean cosine over the samples evaluated.

    They say how much a figure measured on a bounded sample (an emulated
    artifact, a small evaluation split) can move: ``<metric>_ci95_low`` and
    ``_high`` for each metric that applies. Cosine uses the normal interval
    of the mean of the worst output's per-sample cosines.
    """
    out: dict[str, float] = {}
    count = len(outputs[0])
    if labels is not None:
        hits = int(np.sum(_rows(outputs[0]).argmax(axis=1) == labels))
        out["accuracy_ci95_low"], out["accuracy_ci95_high"] = wilson_interval(hits, count)
    if reference is not None:
        if has_classes(reference):
            same = int(np.sum(_rows(outputs[0]).argmax(axis=1) == _rows(reference[0]).argmax(axis=1)))
            out["top1_agreement_ci95_low"], out["top1_agreement_ci95_high"] = wilson_interval(same, count)
        worst = min((per_sample_cosine(o, r) for o, r in zip(outputs, reference, strict=True)), key=lambda c: c.mean())
        half = Z95 * float(worst.std(ddof=1)) / np.sqrt(count) if count > 1 else 1.0
        out["cosine_ci95_low"], out["cosine_ci95_high"] = float(worst.mean() - half), float(min(1.0, worst.mean() + half))
    return out


@dataclass(frozen=True)
class FidelityTarget:
    """The bar candidates of one request must clear against the FP32 model (None: not required).

    Backends get it on ``ExportJob.fidelity`` and test their candidates against
    it on the calibration split (``ExportJob.reference`` holds the FP32
    outputs there); validation applies the same numbers as budgets on the
    evaluation split. ``min_top1_agreement`` is set only when the first output
    is class scores.
    """

    min_cosine: float | None = None
    min_top1_agreement: float | None = None
    min_sqnr_db: float | None = None

    @property
    def required(self) -> bool:
        return any(v is not None for v in (self.min_cosine, self.min_top1_agreement, self.min_sqnr_db))

    def misses(self, metrics: dict[str, float]) -> list[str]:
        """Each bar ``metrics`` misses, as "cosine 0.81 < 0.99"; empty when all are met.

        A missing SQNR counts as met (outputs identical to the reference).
        """
        problems = []
        for key, metric in (("min_cosine", "cosine"), ("min_top1_agreement", "top1_agreement"), ("min_sqnr_db", "sqnr_db")):
            limit = getattr(self, key)
            if limit is None:
                continue
            value = metrics.get(metric)
            if value is None and metric == "sqnr_db":
                continue
            if value is None or value < limit:
                shown = "not measured" if value is None else f"{value:.4g}"
                problems.append(f"{metric} {shown} < {limit:g}")
        return problems

    def met_by(self, metrics: dict[str, float]) -> bool:
        return not self.misses(metrics)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("min_cosine", self.min_cosine), ("min_top1_agreement", self.min_top1_agreement),
                                  ("min_sqnr_db", self.min_sqnr_db)) if v is not None}
