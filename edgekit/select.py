"""Choosing which candidate of a precision ships, and saying why.

Rule: among candidates whose checks all pass, ship the fastest on the host
(p50 latency, batch 1, one thread) of those that are not slower than their
FP32 counterpart; candidates run by an emulator have no meaningful latency,
so among those the smallest ships. If every passing candidate is slower
than FP32, the fastest still ships (the precision is what the profile asked
for) and the record says so loudly: ``slower_than_fp32`` with the ratio and
a reason. If none passes, ship the one with the fewest failed checks, then
the best fidelity, and mark the artifact failed.

"Slower than FP32" is judged per candidate from ``Measured.fp32_ratio``
(its p50 over the FP32 model's, timed interleaved in one run, which is
robust to host noise); without it, from the candidate's p50 over the
``fp32_latency_ms`` the caller passes. A ratio up to ``SAME_SPEED`` counts
as not slower. With neither, the rule is plain fastest-passing.
The record lists every candidate's numbers so the choice can be audited.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgekit.validate import QUALITY_BUDGETS, Check, verdict

# Interleaved timings of one .tflite against an identical copy differed by up
# to 2% on a shared 2-core host (see edgekit/timing.py); a ratio
# within this margin is "as fast as FP32", not slower.
SAME_SPEED = 1.03


@dataclass(frozen=True)
class Measured:
    """A candidate with its target-independent metrics and its target's checks.

    ``fp32_ratio``: the candidate's host p50 over its FP32 counterpart's, when
    the backend timed the two together (None when it did not).
    """

    variant: str
    metrics: dict[str, float]
    checks: list[Check]
    size_bytes: int = 0
    fp32_ratio: float | None = None

    @property
    def cost(self) -> float:
        """What "best" minimises: host latency, or size when latency was not measured (emulated)."""
        return self.metrics.get("latency_p50_ms", float(self.size_bytes))

    @property
    def passed(self) -> bool:
        return verdict(self.checks)

    @property
    def failures(self) -> int:
        return sum(c.status == "fail" for c in self.checks)

    @property
    def failed(self) -> frozenset[str]:
        return frozenset(c.budget for c in self.checks if c.status == "fail")

    def passes_besides(self, budgets: frozenset[str]) -> bool:
        """Whether every check passes once the checks of ``budgets`` are set aside."""
        return self.failed <= budgets


def shared_failures(candidates: list[Measured]) -> frozenset[str]:
    """Resource budgets every candidate fails (a 22 MB model against an 8 MB budget, say).

    They cannot tell candidates apart, so when nothing passes the choice is
    made among the candidates that pass everything else, by the usual rule:
    the shipped artifact still fails, but it is the one that would ship if
    those budgets were met (the fast one that keeps fidelity, not merely the
    one with the highest cosine). Quality budgets are never set aside: when
    every candidate misses one, the best quality ships.
    """
    if not candidates:
        return frozenset()
    return frozenset.intersection(*(c.failed for c in candidates)) - QUALITY_BUDGETS


@dataclass(frozen=True)
class Pools:
    """The selection rule's first two steps, shared by fixed and searched targets (``compress.search``).

    ``passing``: indices of the candidates that meet every budget, or, when
    none does, every budget but the ``shared`` ones all of them fail.
    ``fast``: of those, the ones not slower than FP32 by more than the limit
    (a candidate whose ratio is unknown counts as fast).
    """

    passing: list[int]
    fast: list[int]
    shared: frozenset[str]


def pools(candidates: list[Measured], ratios: list[float | None], limit: float | None = SAME_SPEED) -> Pools:
    """Split ``candidates`` (with their latency ratios to FP32) by the rule; ``limit=None``: speed is not judged."""
    passing = [i for i, c in enumerate(candidates) if c.passed]
    shared = shared_failures(candidates) if not passing else frozenset()
    if shared:
        passing = [i for i, c in enumerate(candidates) if c.passes_besides(shared)]
    fast = [i for i in passing if limit is None or ratios[i] is None or ratios[i] <= limit]  # type: ignore[operator]
    return Pools(passing, fast, shared)


def vs_fp32(candidate: Measured, fp32_latency_ms: float | None = None) -> float | None:
    """The candidate's host latency relative to FP32 (above 1: slower), or None when unknown."""
    if candidate.fp32_ratio is not None:
        return candidate.fp32_ratio
    if fp32_latency_ms and "latency_p50_ms" in candidate.metrics:
        return candidate.metrics["latency_p50_ms"] / fp32_latency_ms
    return None


def _summary(m: Measured, ratio: float | None) -> str:
    parts = [f"p50 {m.metrics['latency_p50_ms']:.3f} ms" if "latency_p50_ms" in m.metrics
             else f"{m.size_bytes / 1024:.1f} KB, latency not measured (emulated)"]
    if ratio is not None:
        parts.append(f"{ratio:.2f}x FP32")
    if "accuracy" in m.metrics:
        parts.append(f"accuracy {m.metrics['accuracy']:.4f}")
    if "cosine" in m.metrics:
        parts.append(f"cosine {m.metrics['cosine']:.5f}")
    parts.append("passes every check" if m.passed else f"{m.failures} check(s) failed")
    return f"{m.variant} ({', '.join(parts)})"


def choose(candidates: list[Measured], fp32_latency_ms: float | None = None) -> tuple[Measured, dict[str, Any]]:
    """Pick the candidate to ship; returns it and a record of the decision.

    The returned Measured is the chosen candidate with ``latency_vs_fp32``
    added to its metrics when that ratio is known, so manifests carry it.
    """
    if not candidates:
        raise ValueError("choose() needs at least one candidate")
    ratios = {c.variant: vs_fp32(c, fp32_latency_ms) for c in candidates}
    # Interleaved ratios share one FP32 denominator, so they order candidates more robustly than raw p50s.
    by_speed = (lambda c: ratios[c.variant]) if all(c.fp32_ratio is not None for c in candidates) else (lambda c: c.cost)
    split = pools(candidates, [ratios[c.variant] for c in candidates])
    passing, fast, shared = [candidates[i] for i in split.passing], [candidates[i] for i in split.fast], split.shared
    slower: dict[str, Any] | None = None
    if passing:
        if fast:
            winner = min(fast, key=by_speed)
            why = ("fastest on the host" if "latency_p50_ms" in winner.metrics else "smallest") + \
                " among candidates that meet every budget"
            if any(r is not None for r in ratios.values()):
                why += " and are not slower than FP32"
        else:
            winner = min(passing, key=by_speed)
            ratio = ratios[winner.variant]
            why = (f"every candidate that meets the budgets is slower than FP32 on the host; shipped the fastest, "
                   f"{ratio:.2f}x the FP32 latency")
            slower = {
                "latency_vs_fp32": ratio,
                "reason": f"all {len(passing)} passing candidate(s) of this precision ran slower than the FP32 model "
                          "on the host (on small models the added QUANTIZE/DEQUANTIZE ops and per-op overheads of "
                          "low-precision kernels can outweigh the cheaper arithmetic); the profile asked for this "
                          "precision, so it ships anyway",
            }
    else:
        winner = min(candidates, key=lambda c: (c.failures, -c.metrics.get("cosine", 0.0), c.cost))
        why = "no candidate meets every budget; shipped the one with the fewest failures and the best fidelity"
    if shared and passing:
        why = (f"no candidate meets every budget: all fail {', '.join(sorted(shared))}; among those that meet the "
               f"rest, {why}")
    if len(candidates) == 1 and slower is None:
        why = "only candidate for this precision" + (f" (it fails {', '.join(sorted(shared))})" if shared else "")
    record: dict[str, Any] = {
        "chosen": winner.variant,
        "reason": why,
        "candidates": [
            {"variant": c.variant, "passed": c.passed, "metrics": c.metrics, "summary": _summary(c, ratios[c.variant]),
             **({"latency_vs_fp32": ratios[c.variant]} if ratios[c.variant] is not None else {})}
            for c in candidates
        ],
    }
    ratio = ratios[winner.variant]
    if ratio is not None:
        record["latency_vs_fp32"] = ratio
        record["latency_vs_fp32_source"] = ("interleaved with the FP32 model" if winner.fp32_ratio is not None
                                            else "separate FP32 measurement in this build")
        winner = dataclasses.replace(winner, metrics={**winner.metrics, "latency_vs_fp32": ratio})
    if slower is not None:
        record["slower_than_fp32"] = slower
    return winner, record
