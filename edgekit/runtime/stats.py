"""Per-arm statistics of a serving model: counts, errors, latency percentiles, what it answered."""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

import numpy as np

# Latency percentiles come from the last requests only, so a slow candidate shows
# up within a window instead of being diluted by everything before it.
LATENCY_WINDOW = 1024


class ArmStats:
    """What one arm (control or candidate) did: thread-safe, bounded memory.

    ``requests`` counts calls that reached the model (cache hits included),
    ``errors`` those whose runtime raised. Output statistics describe the
    first output: the running mean and standard deviation of its values
    (Welford's method) and, for a [N, classes] output, how often each class
    was the top one, so a candidate that answers differently shows it even
    without labels.
    """

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self.requests = 0
        self.errors = 0
        self.cached = 0
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._top1: Counter[int] = Counter()

    def record(self, latency_ms: float | None, outputs: list[np.ndarray] | None, cached: bool = False) -> None:
        """One request: its latency (None when served from the cache) and outputs (None when it failed)."""
        with self._lock:
            self.requests += 1
            self.cached += cached
            if outputs is None:
                self.errors += 1
            if latency_ms is not None:
                self._latencies.append(latency_ms)
            if outputs:
                self._add_outputs(np.asarray(outputs[0]))

    def _add_outputs(self, first: np.ndarray) -> None:
        values = first.astype(np.float64, copy=False).ravel()
        values = values[np.isfinite(values)]
        if values.size:
            # Chan et al.'s parallel update: merge this batch's mean and M2 into the running ones.
            count, mean = values.size, float(values.mean())
            m2 = float(((values - mean) ** 2).sum())
            total = self._count + count
            delta = mean - self._mean
            self._mean += delta * count / total
            self._m2 += m2 + delta * delta * self._count * count / total
            self._count = total
        if first.ndim == 2 and first.shape[1] > 1:
            self._top1.update(int(i) for i in np.argmax(first, axis=1))

    def p99_ms(self) -> float | None:
        """The 99th percentile of the latency window, or None before any timed request."""
        with self._lock:
            return float(np.percentile(self._latencies, 99)) if self._latencies else None

    def error_rate(self) -> float:
        with self._lock:
            return self.errors / self.requests if self.requests else 0.0

    def snapshot(self) -> dict[str, Any]:
        """Every figure as plain JSON-able values."""
        with self._lock:
            latencies = np.asarray(self._latencies, dtype=np.float64)
            timed = {f"latency_{name}_ms": float(np.percentile(latencies, q)) if latencies.size else None
                     for name, q in (("p50", 50), ("p95", 95), ("p99", 99))}
            variance = self._m2 / self._count if self._count else None
            return {
                "requests": self.requests,
                "errors": self.errors,
                "error_rate": self.errors / self.requests if self.requests else 0.0,
                "cache_hits": self.cached,
                "latency_window": int(latencies.size),
                **timed,
                "output_mean": self._mean if self._count else None,
                "output_std": float(np.sqrt(variance)) if variance is not None else None,
                "top1_counts": {str(k): v for k, v in sorted(self._top1.items())},
            }
