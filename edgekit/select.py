"""Choosing which candidate of a precision ships, and saying why.

Rule: among candidates whose checks all pass, ship the fastest on the host
(p50 latency, batch 1, one thread); candidates run by an emulator have no
meaningful latency, so among those the smallest ships. If none passes, ship
the one with the fewest failed checks, then the best fidelity, and mark the
artifact failed.
The reason records every candidate's numbers so the choice can be audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekit.validate import Check, verdict


@dataclass(frozen=True)
class Measured:
    """A candidate with its target-independent metrics and its target's checks."""

    variant: str
    metrics: dict[str, float]
    checks: list[Check]
    size_bytes: int = 0

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


def _summary(m: Measured) -> str:
    parts = [f"p50 {m.metrics['latency_p50_ms']:.3f} ms" if "latency_p50_ms" in m.metrics
             else f"{m.size_bytes / 1024:.1f} KB, latency not measured (emulated)"]
    if "accuracy" in m.metrics:
        parts.append(f"accuracy {m.metrics['accuracy']:.4f}")
    if "cosine" in m.metrics:
        parts.append(f"cosine {m.metrics['cosine']:.5f}")
    parts.append("meets budgets" if m.passed else f"{m.failures} budget(s) failed")
    return f"{m.variant} ({', '.join(parts)})"


def choose(candidates: list[Measured], fp32_latency_ms: float | None = None) -> tuple[Measured, dict[str, Any]]:
    """Pick the candidate to ship; returns it and a record of the decision."""
    passing = [c for c in candidates if c.passed]
    if passing:
        winner = min(passing, key=lambda c: c.cost)
        why = ("fastest on the host" if "latency_p50_ms" in winner.metrics else "smallest") + \
            " among candidates that meet every budget"
    else:
        winner = min(candidates, key=lambda c: (c.failures, -c.metrics.get("cosine", 0.0), c.cost))
        why = "no candidate meets every budget; shipped the one with the fewest failures and the best fidelity"
    if len(candidates) == 1:
        why = "only candidate for this precision"
    record: dict[str, Any] = {
        "chosen": winner.variant,
        "reason": why,
        "candidates": [
            {"variant": c.variant, "passed": c.passed, "metrics": c.metrics, "summary": _summary(c)} for c in candidates
        ],
    }
    if fp32_latency_ms and "latency_p50_ms" in winner.metrics:
        record["latency_vs_fp32"] = winner.metrics["latency_p50_ms"] / fp32_latency_ms
    return winner, record
