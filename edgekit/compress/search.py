"""Budget-driven choice: which of many measured candidates a searched target ships.

A searched target pools, per format, every candidate built for it: each
allowed precision × each compressed variant of the model × each backend
recipe. Every candidate was measured in its own runtime and checked against
the target's budgets. The rule:

1. among the candidates that meet every budget and are not slower than the
   FP32 model on the host by more than ``max_latency_vs_fp32`` (as for a
   single precision, see edgekit.select), ship the one with the least
   objective (size, download size or host latency), ties broken by quality
   (accuracy, else cosine similarity to the FP32 model), then size;
2. if every passing candidate is slower than that, ship the best of them by
   the same order and record ``slower_than_fp32``;
3. if none meets every budget, ship the one with the fewest failed checks
   and the best quality, and mark it failed.

The record lists every candidate with its numbers, failed budgets and whether
it is Pareto-optimal (no other candidate is at least as good on size,
quality and latency and better on one), plus the requests that could not be
built and why. No torch here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgekit.select import SAME_SPEED, Measured, pools, vs_fp32

OBJECTIVE_METRIC = {"size": "size_bytes", "download": "download_bytes", "latency": "latency_p50_ms"}
OBJECTIVE_WORDS = {"size": "smallest file", "download": "smallest download (gzip)", "latency": "fastest on the build host"}


@dataclass(frozen=True)
class SearchCandidate:
    """One built and measured candidate of a search."""

    model_variant: str  # "model", "pruned-s0.8", "student-w0.5", ...
    precision: str
    measured: Measured  # measured.variant is the backend recipe
    download_bytes: int

    @property
    def key(self) -> str:
        return f"{self.model_variant}/{self.precision}/{self.measured.variant}"

    @property
    def quality(self) -> float:
        """Higher is better: accuracy when labelled, else agreement (cosine) with the FP32 model."""
        metrics = self.measured.metrics
        return metrics.get("accuracy", metrics.get("cosine", 0.0))

    def value(self, objective: str) -> float | None:
        if objective == "size":
            return float(self.measured.size_bytes)
        if objective == "download":
            return float(self.download_bytes)
        return self.measured.metrics.get("latency_p50_ms")


def _dominates(a: SearchCandidate, b: SearchCandidate, with_latency: bool, size: str) -> bool:
    """``a`` is at least as good as ``b`` on every axis and better on one."""
    axes = [(a.value(size), b.value(size)), (-a.quality, -b.quality)]
    if with_latency:
        axes.append((a.measured.metrics["latency_p50_ms"], b.measured.metrics["latency_p50_ms"]))
    return all(x <= y for x, y in axes) and any(x < y for x, y in axes)


def pareto_front(candidates: list[SearchCandidate], size: str = "size") -> set[str]:
    """Keys of the candidates no other candidate dominates on size, quality (and latency, when all have it).

    ``size`` is ``"size"`` (bytes on the device) or ``"download"`` (gzip bytes).
    """
    with_latency = all("latency_p50_ms" in c.measured.metrics for c in candidates)
    return {c.key for c in candidates
            if not any(_dominates(o, c, with_latency, size) for o in candidates if o is not c)}


def choose(candidates: list[SearchCandidate], objective: str, excluded: list[dict[str, str]] | None = None, *,
           fp32_latency_ms: float | None = None,
           max_latency_vs_fp32: float | None = SAME_SPEED) -> tuple[SearchCandidate, dict[str, Any]]:
    """Pick the candidate to ship; returns it (with ``latency_vs_fp32`` in its metrics when known) and the record.

    ``excluded`` lists requests that produced no candidate (``{"candidate",
    "reason"}``), kept in the record so the search space is auditable.
    A candidate's speed against FP32 comes from its interleaved ratio, else
    from ``fp32_latency_ms``; ``max_latency_vs_fp32=None`` turns that
    preference off. Raises ``ValueError`` on an empty pool.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    if objective == "latency" and any(c.value("latency") is None for c in candidates):
        objective_used = "size"  # emulated runtimes have no latency: say so instead of inventing one
        note = "latency was not measured for every candidate (emulated runtime), so the search minimised size"
    else:
        objective_used, note = objective, ""
    ratios = {c.key: vs_fp32(c.measured, fp32_latency_ms) for c in candidates}
    # The same rule as a fixed target's (select.pools): budgets every candidate fails do not tell them apart.
    split = pools([c.measured for c in candidates], [ratios[c.key] for c in candidates], max_latency_vs_fp32)
    passing, fast, shared = [candidates[i] for i in split.passing], [candidates[i] for i in split.fast], split.shared
    slower: dict[str, Any] | None = None
    order = lambda c: (c.value(objective_used), -c.quality, c.measured.size_bytes)  # noqa: E731
    if fast:
        winner = min(fast, key=order)
        reason = f"{OBJECTIVE_WORDS[objective_used]} among {len(fast)} of {len(candidates)} candidates that meet every budget"
        if len(fast) < len(passing):
            reason += f" and are at most {max_latency_vs_fp32:g}x the FP32 latency on the host"
    elif passing:
        winner = min(passing, key=order)
        ratio = ratios[winner.key]
        reason = (f"every candidate that meets the budgets is slower than {max_latency_vs_fp32:g}x FP32 on the host; "
                  f"shipped the {OBJECTIVE_WORDS[objective_used]} of them, {ratio:.2f}x the FP32 latency")
        slower = {"latency_vs_fp32": ratio, "limit": max_latency_vs_fp32}
    else:
        winner = min(candidates, key=lambda c: (c.measured.failures, -c.quality, c.value(objective_used) or 0.0))
        reason = "no candidate meets every budget; shipped the one with the fewest failures and the best quality"
    if shared and passing:
        reason = f"no candidate meets every budget: all fail {', '.join(sorted(shared))}; among the rest, {reason}"
    size_axis = "download" if objective_used == "download" else "size"
    front = pareto_front(candidates, size_axis)
    record: dict[str, Any] = {
        "objective": objective,
        "objective_used": objective_used,
        "chosen": winner.key,
        "reason": reason,
        "size_axis": size_axis,
        "candidates": [_row(c, front, ratios[c.key])
                       for c in sorted(candidates, key=lambda c: c.value(size_axis) or 0.0)],
        "excluded": list(excluded or []),
    }
    if ratios[winner.key] is not None:
        record["latency_vs_fp32"] = ratios[winner.key]
        # As select.choose does: the shipped candidate's metrics carry the ratio, so manifests show it.
        measured = dataclasses.replace(winner.measured, metrics={**winner.measured.metrics,
                                                                 "latency_vs_fp32": ratios[winner.key]})
        winner = dataclasses.replace(winner, measured=measured)
    if slower is not None:
        record["slower_than_fp32"] = slower
    if note:
        record["note"] = note
    return winner, record


def _row(candidate: SearchCandidate, front: set[str], ratio: float | None) -> dict[str, Any]:
    metrics = candidate.measured.metrics
    row: dict[str, Any] = {
        "candidate": candidate.key,
        "model": candidate.model_variant,
        "precision": candidate.precision,
        "recipe": candidate.measured.variant,
        "size_bytes": candidate.measured.size_bytes,
        "download_bytes": candidate.download_bytes,
        "passed": candidate.measured.passed,
        "failed": [c.budget for c in candidate.measured.checks if c.status == "fail"],
        "pareto": candidate.key in front,
    }
    for name in ("accuracy", "accuracy_drop", "cosine", "max_abs_error", "latency_p50_ms"):
        if name in metrics:
            row[name] = metrics[name]
    if ratio is not None:
        row["latency_vs_fp32"] = ratio
    return row
