"""Interleaved host timing of several models, to say whether a candidate is slower than FP32.

Format-neutral: a model is given as a *timer*, a callable
``timer(runs, warmup) -> list[float]`` returning the seconds of each of
``runs`` batch-1 inferences after ``warmup`` untimed ones. Backends open
their sessions (one thread) and hand over timers; see
``backends/tflite/fp32_timing.py`` and ``backends/onnx/fp32_timing.py``.

Timing each model in its own block lets drift on a shared host (another
process starting, frequency changes) land on one model and not the other;
on sub-millisecond models that flips which is faster. ``interleaved`` runs
``ROUNDS`` rounds; in each round every model runs a short block of runs, in
an order that rotates each round. Drift then hits all models alike.

``comparison(candidate, fp32, setting)`` is the record a candidate carries
in ``details["vs_fp32"]`` (the same keys for every format, so selection and
reports treat them alike); its ``latency_vs_fp32`` (above 1: slower than
FP32) is the median over rounds of the candidate's block p50 over FP32's
block p50 in the same round. Measured on a shared 2-core host (load ~3.5)
by timing two copies of one .tflite (MLP 6 us, Transformer 31 us, MobileNet
0.36 ms), 4 trials each: that paired median stayed within 0.98-1.02, while
the ratio of p50s over all runs spread 0.95-1.05 and, with 15 rounds of
20 ms, once reached 1.25.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# (runs, warmup) -> seconds per timed run.
Timer = Callable[[int, int], list[float]]

ROUNDS = 30
# Each model's block in a round aims at this much time, so big and tiny models both get enough runs;
# short blocks keep the paired blocks of one round close together in time.
BLOCK_SECONDS = 0.01
MIN_RUNS, MAX_RUNS = 3, 50
WARMUP_RUNS = 10


def interleaved(timers: Sequence[Timer], rounds: int = ROUNDS) -> list[dict[str, Any]]:
    """p50/p95 milliseconds of each timer's model (same order), timed interleaved.

    Per model: ``latency_p50_ms``, ``latency_p95_ms``, ``runs``, and
    ``round_p50_ms`` (the p50 of each round, for the paired ratio and the spread).
    """
    # Warm-up also sizes each model's block: runs that fill about BLOCK_SECONDS.
    blocks = []
    for timer in timers:
        per_run = max(float(np.median(timer(WARMUP_RUNS, 2))), 1e-6)
        blocks.append(int(np.clip(round(BLOCK_SECONDS / per_run), MIN_RUNS, MAX_RUNS)))
    times: list[list[float]] = [[] for _ in timers]
    per_round: list[list[float]] = [[] for _ in timers]
    for r in range(rounds):
        for k in ((r + i) % len(timers) for i in range(len(timers))):
            seconds = timers[k](blocks[k], 1)
            times[k].extend(seconds)
            per_round[k].append(float(np.median(seconds)) * 1e3)
    results = []
    for seconds, rounds_ms in zip(times, per_round):
        ms = np.asarray(seconds) * 1e3
        results.append(
            {
                "latency_p50_ms": float(np.percentile(ms, 50)),
                "latency_p95_ms": float(np.percentile(ms, 95)),
                "runs": int(len(ms)),
                "round_p50_ms": rounds_ms,
            }
        )
    return results


def _relative_half_iqr(values: list[float]) -> float | None:
    if len(values) < 4:
        return None
    low, middle, high = np.percentile(values, [25, 50, 75])
    return float((high - low) / 2 / middle) if middle > 0 else None


def comparison(candidate: dict[str, Any], fp32: dict[str, Any], setting: str) -> dict[str, Any]:
    """What a candidate records about its speed against FP32 (both from one ``interleaved`` run).

    ``setting`` says where the models ran (e.g. "one process each"); it only
    enters the human-readable ``method``.
    """
    ratios = [c / f for c, f in zip(candidate["round_p50_ms"], fp32["round_p50_ms"]) if f > 0]
    return {
        "latency_vs_fp32": float(np.median(ratios)) if ratios else candidate["latency_p50_ms"] / fp32["latency_p50_ms"],
        "latency_p50_ms": candidate["latency_p50_ms"],
        "fp32_latency_p50_ms": fp32["latency_p50_ms"],
        # Share of rounds in which the candidate was faster: 1.0 or 0.0 means the order never flipped.
        "rounds_faster": float(np.mean([r < 1.0 for r in ratios])) if ratios else None,
        # How much the ratio moved from round to round (half the interquartile range, relative to the median):
        # the noise within which two candidates' ratios cannot be told apart (edgekit.select's ties).
        "ratio_noise": _relative_half_iqr(ratios),
        "runs": candidate["runs"],
        "fp32_runs": fp32["runs"],
        "method": f"interleaved with the FP32 model, {setting}: {len(ratios)} rounds in rotating order, "
        "batch 1, one thread; latency_vs_fp32 is the median over rounds of the two blocks' p50 ratio",
    }
