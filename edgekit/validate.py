"""Validation: run an artifact's own bytes in its runtime and judge it against budgets.

Metrics are registered by name; budgets map to checks with a status of
``pass``, ``fail`` or ``skipped`` (with a note saying why, e.g. a latency
budget for a device that is not this host). No torch here: this module runs
on devices too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekit import fidelity
from edgekit.artifact import CandidateFacts
from edgekit.backends import Session
from edgekit.config import Budgets
from edgekit.data import Dataset

MB = 1_000_000  # sizes and budgets use decimal megabytes, like file managers and app stores
MIB = 1024 * 1024  # memory is in MiB, like RSS in top and edgekit bench


@dataclass(frozen=True)
class Check:
    """One budget compared with one measured (or estimated) value."""

    budget: str
    limit: float
    value: float | None
    status: str  # "pass" | "fail" | "skipped"
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_batched(session: Session, data: Dataset, batch_size: int = 64) -> list[np.ndarray]:
    """Run every sample through ``session``; outputs concatenated in ``session.outputs`` order."""
    parts: list[list[np.ndarray]] = []
    for batch in data.batches(batch_size):
        outputs = session.run(batch)
        if not parts:
            parts = [[] for _ in outputs]
        for slot, out in zip(parts, outputs, strict=True):
            slot.append(np.asarray(out, dtype=np.float32))
    return [np.concatenate(p) for p in parts]


# ----------------------------------------------------------------- metrics


def accuracy(outputs: list[np.ndarray], y: np.ndarray) -> float:
    """Top-1 accuracy of the first output (class scores) against integer labels."""
    return float(np.mean(outputs[0].reshape(len(y), -1).argmax(axis=1) == y))


# The fidelity metrics live in edgekit.fidelity (backends use them too); re-exported for callers here.
top1_agreement = fidelity.top1_agreement
cosine = fidelity.cosine
max_abs_error = fidelity.max_abs_error
sqnr_db = fidelity.sqnr_db


# Float agreement: how closely a plain float program must reproduce the FP32 model, by compute precision.
# A backend opts a candidate in with ``CandidateFacts.float_agreement`` "fp16" (or "fp32") when the
# candidate is the model converted at that precision and nothing else (no weight compression).
FLOAT_AGREEMENT = {"fp32": 1e-4, "fp16": 1e-2}
# Outputs larger than this have their error judged relative to their size. Measured: FP16 error is
# proportional to the output's magnitude (the sample CNN with its logits scaled x1, x4, x8 had max abs
# errors 0.0038, 0.0153, 0.0306, a constant 5.8e-4 of the largest logit, with unchanged accuracy), so a
# fixed 1e-2 fails sound FP16 conversions once logits pass ~17. Up to 8 (every sample's outputs: largest
# |logit| 5.0-7.6) the limits above apply as plain max abs errors.
AGREEMENT_MAGNITUDE = 8.0


def scaled_max_abs_error(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Max abs error, each output's divided by max(1, its largest |reference| / AGREEMENT_MAGNITUDE).

    Equals ``max_abs_error`` when every reference output stays within +-AGREEMENT_MAGNITUDE.
    """
    worst = 0.0
    for out, ref in zip(outputs, reference, strict=True):
        ref64 = ref.astype(np.float64)
        scale = max(1.0, float(np.abs(ref64).max(initial=0.0)) / AGREEMENT_MAGNITUDE)
        worst = max(worst, float(np.abs(out.astype(np.float64) - ref64).max(initial=0.0)) / scale)
    return worst


def evaluate(
    session: Session,
    data: Dataset,
    reference: list[np.ndarray] | None,
    reference_accuracy: float | None,
) -> dict[str, float]:
    """Accuracy (when labelled) and fidelity to the FP32 reference (when given)."""
    outputs = run_batched(session, data)
    metrics: dict[str, float] = {"samples": float(len(data))}
    if data.labelled:
        metrics["accuracy"] = accuracy(outputs, data.y)  # type: ignore[arg-type]
        if reference_accuracy is not None:
            metrics["accuracy_drop"] = reference_accuracy - metrics["accuracy"]
    if reference is not None:
        if len(reference) != len(outputs) or any(r.shape != o.shape for r, o in zip(reference, outputs, strict=False)):
            shapes = [o.shape for o in outputs], [r.shape for r in reference]
            raise ValueError(f"artifact outputs {shapes[0]} do not match the reference outputs {shapes[1]}")
        metrics.update(fidelity.measure(outputs, reference))
        value = scaled_max_abs_error(outputs, reference)
        if np.isfinite(value):
            metrics["max_abs_error_scaled"] = value
    metrics.update(fidelity.intervals(outputs, reference, data.y if data.labelled else None))
    return metrics


# Emulated artifacts (Core ML off macOS) run in edgekit's numpy interpreter, which is far slower than a
# runtime: on a 224x224 MobileNetV2 it dominated the whole build. They are evaluated on a seeded sample
# sized by the model's cost (EMULATED_MAC_BUDGET multiply-accumulates in all, between the two bounds);
# the metrics carry 95 % intervals, and "samples" / "samples_available" say how many were used.
EMULATED_MAC_BUDGET = 2e10
EMULATED_MIN_SAMPLES = 48
EMULATED_MAX_SAMPLES = 256


def emulated_sample(count: int, macs_per_sample: int, seed: int) -> np.ndarray:
    """Sorted indices of the evaluation samples an emulated artifact is evaluated on (all, when few)."""
    wanted = int(EMULATED_MAC_BUDGET // max(macs_per_sample, 1))
    size = min(count, EMULATED_MAX_SAMPLES, max(EMULATED_MIN_SAMPLES, wanted))
    if size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def measure_latency(session: Session, sample: dict[str, np.ndarray], runs: int, warmup: int = 10) -> dict[str, float]:
    """Host latency at batch 1 after warm-up: p50, p95 and mean in milliseconds.

    Sessions that run in a child process expose ``time_runs`` (timed inside
    the child) so that pipe overhead is not counted.
    """
    timer = getattr(session, "time_runs", None)
    if timer is not None:
        seconds = list(timer(sample, runs, warmup))
    else:
        for _ in range(warmup):
            session.run(sample)
        seconds = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(sample)
            seconds.append(time.perf_counter() - start)
    ms = np.asarray(seconds) * 1e3
    return {
        "latency_p50_ms": float(np.percentile(ms, 50)),
        "latency_p95_ms": float(np.percentile(ms, 95)),
        "latency_mean_ms": float(ms.mean()),
        "latency_runs": float(len(ms)),
    }


def peak_rss_mb(session: object | None = None) -> float:
    """Peak resident memory of the process that runs ``session``'s model, in MiB (the unit of
    ``max_ram_mb`` everywhere, as in ``edgekit bench``).

    A session that runs its model in a child process (LiteRT) reports that
    child's peak (``session.peak_rss_mb()``): this process's own would miss the
    model entirely. Otherwise it is this process's peak so far (Python +
    runtime + model; the validate path loads no torch), an upper bound.
    """
    import resource
    import sys

    child = getattr(session, "peak_rss_mb", None)
    if callable(child):
        measured = child()
        if measured is not None:
            return float(measured)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak * 1024 / MIB  # bytes on macOS, KiB on Linux


# ------------------------------------------------------------------ budgets


def _check(budget: str, limit: float | None, value: float | None, ok: Callable[[float, float], bool], note: str = "") -> Check | None:
    if limit is None:
        return None
    if value is None:
        return Check(budget, limit, None, "skipped", note)
    return Check(budget, limit, value, "pass" if ok(value, limit) else "fail", note)


def _sqnr_check(limit: float | None, metrics: dict[str, float], no_reference: str) -> Check | None:
    if limit is not None and "sqnr_db" not in metrics and metrics.get("max_abs_error") == 0.0:
        return Check("min_sqnr_db", limit, None, "pass", "outputs identical to the FP32 reference (no noise)")
    return _check("min_sqnr_db", limit, metrics.get("sqnr_db"), lambda v, lim: v >= lim,
                  "" if "sqnr_db" in metrics else no_reference)


def _agreement_check(metrics: dict[str, float], facts: CandidateFacts, no_reference: str) -> Check | None:
    """The float-agreement check of a candidate whose backend declared ``facts.float_agreement``."""
    precision = facts.float_agreement
    if precision is None:
        return None
    limit = FLOAT_AGREEMENT[precision]
    value = metrics.get("max_abs_error_scaled")
    note = (f"{precision.upper()} program vs the FP32 model: max abs error of every output "
            f"(divided by max(1, largest |reference| / {AGREEMENT_MAGNITUDE:g}))")
    if value is not None and value > limit:
        note += (f"; {value:.3g} is over {limit:g}: the artifact drifts from the model by more than "
                 f"{precision.upper()} arithmetic should. Request a higher precision (precision = \"fp32\"), "
                 f"or keep the ops that drift (often normalisations) in FP32")
    return _check("float_agreement", limit, value, lambda v, lim: v <= lim, note if value is not None else no_reference)


# Budgets that judge what the artifact computes. A verdict must rest on at least one of them
# measured: with unlabelled data the accuracy budget is skipped, and fidelity must decide.
QUALITY_BUDGETS = frozenset({"max_accuracy_drop", "min_cosine", "min_top1_agreement", "min_sqnr_db", "max_abs_error",
                             "float_agreement"})


def check_budgets(
    metrics: dict[str, float],
    budgets: Budgets,
    size: int,
    facts: CandidateFacts,
    device_measured: bool,
    device_name: str,
    classes: bool = True,
) -> list[Check]:
    """Compare metrics with every set budget.

    ``budgets`` are the artifact's own (``TargetProfile.budgets_for`` its
    precision: the profile's budgets over the precision's quality bar).
    ``device_measured`` says whether latency and memory were measured on the
    target device itself (``edgekit validate`` on the device, or a build with
    ``latency_on_host``). When they were not, those checks are ``skipped``
    with a note: a host number says nothing certain about a Pi.

    ``classes`` says the first output is class scores (labelled data or
    ``task = "classification"``), so ``min_top1_agreement`` is judged;
    otherwise it is skipped with a note (the argmax of an embedding means
    nothing).

    Besides the profile's budgets, a candidate whose ``facts`` name a
    ``float_agreement`` precision ("fp32" or "fp16": a plain float program)
    gets the ``float_agreement`` check: its outputs must match the FP32
    reference within ``FLOAT_AGREEMENT[precision]`` (see
    ``scaled_max_abs_error``). It can fail whatever the profile says, so a
    float program that drifts from the model never ships as passing.

    When budgets are set but no quality budget could be measured, a failing
    ``quality`` check says so: no verdict of "pass" rests on skipped quality
    budgets alone.
    """
    le = lambda v, lim: v <= lim  # noqa: E731
    ge = lambda v, lim: v >= lim  # noqa: E731
    micro = facts.micro or {}
    not_here = f"not measured on {device_name}; run `edgekit validate --target {device_name}` or `edgekit bench` on the device"
    no_labels = "no labels in the data"
    no_reference = "no FP32 reference"
    if "top1_agreement" not in metrics:
        top1_note = no_reference if "cosine" not in metrics else "the first output has a single score (no top class)"
    elif not classes:
        top1_note = ("not judged: the data has no labels and [data] task is not 'classification', so the first "
                     "output may not be class scores")
    else:
        top1_note = ""
    checks = [
        _check("max_size_mb", budgets.max_size_mb, size / MB, le),
        _check("max_accuracy_drop", budgets.max_accuracy_drop, metrics.get("accuracy_drop"), le,
               "" if "accuracy_drop" in metrics else no_reference if "accuracy" in metrics else no_labels),
        _check("min_cosine", budgets.min_cosine, metrics.get("cosine"), ge, "" if "cosine" in metrics else no_reference),
        _check("min_top1_agreement", budgets.min_top1_agreement, None if top1_note else metrics.get("top1_agreement"),
               ge, top1_note),
        _check("max_abs_error", budgets.max_abs_error, metrics.get("max_abs_error"), le,
               "" if "max_abs_error" in metrics else no_reference),
        _sqnr_check(budgets.min_sqnr_db, metrics, no_reference),
        *(device_checks(budgets, metrics.get("latency_p50_ms"), metrics.get("peak_rss_mb"), "p50 at batch 1")
          if device_measured else device_checks(budgets, None, None, "", not_here)),
        _check("max_flash_kb", budgets.max_flash_kb,
               micro["flash_bytes"] / 1024 if "flash_bytes" in micro else None, le,
               "" if "flash_bytes" in micro else "no microcontroller flash figure for this artifact"),
        _check("max_arena_kb", budgets.max_arena_kb,
               micro["arena_bytes"] / 1024 if "arena_bytes" in micro else None, le,
               micro.get("method", "no tensor-arena figure for this artifact")),
        _agreement_check(metrics, facts, no_reference),
        *attack_checks(budgets, metrics),
    ]
    found = [c for c in checks if c is not None]
    quality = [c for c in found if c.budget in QUALITY_BUDGETS]
    if quality and all(c.status == "skipped" for c in quality):
        skipped = ", ".join(f"{c.budget} ({c.note})" for c in quality)
        found.append(Check("quality", 1.0, None, "fail",
                           f"no quality budget could be measured: {skipped}. Give labelled data and an FP32 reference "
                           "(validate --reference FP32_ARTIFACT, or the build's report beside the artifact), or keep "
                           "a fidelity budget (min_cosine, min_sqnr_db) that compares with the FP32 model"))
    return found


def attack_checks(budgets: Budgets, metrics: dict[str, float]) -> list[Check]:
    """The robustness and membership budgets (``edgekit.attacks``); skipped, saying why, when not measured."""
    le = lambda v, lim: v <= lim  # noqa: E731
    checks = [
        _check("max_robust_accuracy_drop", budgets.max_robust_accuracy_drop, metrics.get("robust_accuracy_drop"), le,
               "FP32's robust accuracy minus the artifact's, at the judged eps, on examples crafted on FP32"
               if "robust_accuracy_drop" in metrics else
               "robustness not measured (attacks off, no float inputs or no class scores: see the manifest's "
               "attacks record)"),
        _check("max_membership_auc", budgets.max_membership_auc, metrics.get("membership_auc"), le,
               f"loss-threshold attack, 95 % interval {metrics['membership_auc_ci95_low']:.3f}-"
               f"{metrics['membership_auc_ci95_high']:.3f}; bounds this attack only"
               if "membership_auc" in metrics else
               "membership not measured (attacks off or no [data] train: see the manifest's attacks record)"),
    ]
    return [c for c in checks if c is not None]


def device_checks(
    budgets: Budgets, latency_ms: float | None, peak_rss_mb: float | None, latency_note: str,
    not_measured: str = "not measured on this machine",
) -> list[Check]:
    """The latency and RAM checks: the only budgets a device measurement judges (``build``, ``validate``, ``bench``).

    ``peak_rss_mb`` is the peak resident memory, in MiB, of the process that ran
    the model (runtime included: the device pays for it too). A figure that was
    not measured gives a ``skipped`` check saying ``not_measured``, never a pass.
    """
    le = lambda v, lim: v <= lim  # noqa: E731
    checks = [
        _check("max_latency_ms", budgets.max_latency_ms, latency_ms, le, latency_note if latency_ms is not None
               else not_measured),
        _check("max_ram_mb", budgets.max_ram_mb, peak_rss_mb, le,
               "peak RSS (MiB) of the process running the artifact" if peak_rss_mb is not None else not_measured),
    ]
    return [c for c in checks if c is not None]


def decided_by(checks: list[Check]) -> list[str]:
    """The quality checks that were measured (pass or fail): what the verdict on quality rests on."""
    return [c.budget for c in checks if c.budget in QUALITY_BUDGETS and c.status != "skipped"]


def verdict(checks: list[Check]) -> bool:
    """True when no check failed (skipped checks do not fail an artifact)."""
    return all(c.status != "fail" for c in checks)
