"""The arms of a serving model: a loaded release, how it runs (direct or micro-batched), and its statistics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.release import rollout
from edgekit.release.experiment import AbortRule
from edgekit.runtime.loaded import LoadedRelease
from edgekit.runtime.stats import ArmStats

CONTROL, CANDIDATE = "control", "candidate"


@dataclass
class Arm:
    """One release in service. ``run`` takes checked feeds and returns the outputs in manifest order.

    Without a micro-batcher, calls are serialised by a lock: a runtime
    session is not promised to be safe to call from several threads.
    """

    name: str
    release: LoadedRelease
    percentage: int | None = None
    rule: AbortRule | None = None
    stats: ArmStats = field(default_factory=ArmStats)
    batcher: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.batcher is not None:
            return list(self.batcher(feeds))
        with self._lock:
            return list(self.release.session.run(feeds))

    def describe(self) -> dict[str, Any]:
        """The arm's release and figures, as JSON-able values."""
        provenance = self.release.provenance
        return {"version": provenance.version, "artifact": provenance.artifact, "format": provenance.format,
                "precision": provenance.precision, "artifact_sha256": provenance.artifact_sha256,
                **({"percentage": self.percentage} if self.percentage is not None else {}),
                **({"batcher": self.batcher.stats()} if self.batcher is not None else {}),
                **self.stats.snapshot()}

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.release.close()


def with_batcher(arm: Arm, max_batch: int | None, max_wait_ms: float) -> Arm:
    """``arm`` running through a micro-batcher of ``max_batch`` samples (unchanged when ``max_batch`` is None)."""
    if max_batch is None:
        return arm
    from edgekit.runtime.batcher import MicroBatcher

    arm.batcher = MicroBatcher(arm.release.session.run, max_batch=max_batch, max_wait_ms=max_wait_ms)
    return arm


def assign(model: str, candidate: Arm | None, unit_id: str | None) -> str:
    """The arm of ``unit_id``: the candidate when the release rollout's bucketing selects it, else the control.

    The bucket hashes model, candidate version and unit id, so a unit keeps
    its arm across requests, restarts and devices, and raising the percentage
    only moves units from the control to the candidate. Requests without a
    unit id go to the control.
    """
    if candidate is None or unit_id is None or candidate.percentage is None:
        return CONTROL
    selected = rollout.selected(model, candidate.release.version, unit_id, candidate.percentage)
    return CANDIDATE if selected else CONTROL


def breach(rule: AbortRule, candidate: ArmStats, control: ArmStats) -> dict[str, Any] | None:
    """The bound the candidate broke, with the measured value, or None (also before ``min_requests``)."""
    if candidate.requests < rule.min_requests:
        return None
    error_rate = candidate.error_rate()
    if rule.error_rate is not None and error_rate > rule.error_rate:
        return {"rule": "error_rate", "limit": rule.error_rate, "value": error_rate, "requests": candidate.requests}
    p99 = candidate.p99_ms()
    if p99 is None:
        return None
    if rule.p99_ms is not None and p99 > rule.p99_ms:
        return {"rule": "p99_ms", "limit": rule.p99_ms, "value": p99, "requests": candidate.requests}
    control_p99 = control.p99_ms()
    if rule.p99_ratio is not None and control_p99 and control.requests >= rule.min_requests:
        ratio = p99 / control_p99
        if ratio > rule.p99_ratio and p99 - control_p99 > (rule.p99_slack_ms or 0.0):
            return {"rule": "p99_ratio", "limit": rule.p99_ratio, "value": ratio, "candidate_p99_ms": p99,
                    "control_p99_ms": control_p99, "requests": candidate.requests}
    return None
