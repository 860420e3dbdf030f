"""Confidence intervals for ``bench compare``: how sure is "B is 0.93x A"?

A bench result keeps its per-run latencies (``latency_samples``: every timed
run in order, thinned evenly to at most ``MAX_SAMPLES``). ``ratio_interval``
then gives the B/A ratio of a statistic (p50, p90, p99, mean, throughput)
with a 95 % interval from a bootstrap over those runs.

Why a bootstrap, and why by blocks: A and B are usually separate runs (two
boards, or a before and an after file), so the runs are not paired and
``edgekit.timing``'s paired-ratio median does not apply. Consecutive runs are
not independent either (clock changes, cache and thermal drift come in
stretches), so resampling single runs would make the interval too narrow.
The moving-block bootstrap resamples stretches of ``block_length(n)``
consecutive runs instead (length ~ n^(1/3), the usual rate), keeping that
short-range dependence. The interval is the 2.5 and 97.5 percentiles of
``RESAMPLES`` resampled ratios (seeded: the same files give the same
interval).

Measured coverage of the true ratio (two simulated runs of one model, 200
runs each, lognormal noise plus AR(1) drift of correlation rho, 200
comparisons; mean / p50): independent runs 0.955 / 0.975; rho 0.5: 0.90 /
0.94 (resampling single runs: 0.82 / 0.86); rho 0.8: 0.77 / 0.82 (single
runs: 0.49 / 0.62). Longer blocks (n^(1/2)) helped strong drift but lost
coverage on independent runs (0.90). So the interval is honest about
run-to-run noise and short drift; slow drift (a board heating for
minutes) is what ``device_state`` warns about, and what differs between
days or boards of one model needs repeated runs.

A quantile estimated from few runs has no meaningful interval:
``min_runs`` asks for at least ``TAIL_RUNS`` runs beyond the quantile
(10 runs for p50, 50 for p90, 500 for p99); below that the interval is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_SAMPLES = 2000
RESAMPLES = 1000
CONFIDENCE = 0.95
TAIL_RUNS = 5
SEED = 0
# Statistic name in a result's latency_ms -> quantile (None: the mean).
QUANTILES: dict[str, float | None] = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "mean": None}


def latency_samples(times_s: Sequence[float], limit: int = MAX_SAMPLES) -> list[float]:
    """Per-run latencies in ms (4 significant digits), in run order, thinned evenly to at most ``limit``."""
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    if len(ms) > limit:
        ms = ms[np.linspace(0, len(ms) - 1, limit).round().astype(int)]
    return [float(f"{v:.4g}") for v in ms]


def block_length(n: int) -> int:
    return max(1, round(n ** (1 / 3)))


def min_runs(quantile: float | None) -> int:
    """Fewest runs whose statistic gets an interval (``TAIL_RUNS`` beyond the quantile)."""
    tail = 0.5 if quantile is None else min(quantile, 1 - quantile)
    return math.ceil(round(TAIL_RUNS / tail, 9))  # round: 5 / (1 - 0.9) is 50.000000000000014 in floats


def _resampled(samples: np.ndarray, quantile: float | None, rng: np.random.Generator) -> np.ndarray:
    """The statistic of RESAMPLES moving-block bootstrap resamples of ``samples``."""
    n = len(samples)
    length = block_length(n)
    blocks = math.ceil(n / length)
    starts = rng.integers(0, n - length + 1, size=(RESAMPLES, blocks))
    index = (starts[:, :, None] + np.arange(length)).reshape(RESAMPLES, -1)[:, :n]
    drawn = samples[index]
    return drawn.mean(axis=1) if quantile is None else np.quantile(drawn, quantile, axis=1)


def ratio_interval(a: Sequence[float] | None, b: Sequence[float] | None, statistic: str,
                   inverse: bool = False) -> list[float] | None:
    """95 % interval of stat(B)/stat(A) for a latency ``statistic`` (a key of QUANTILES), or None.

    ``inverse`` gives the interval of stat(A)/stat(B) instead: a throughput
    ratio at equal batch size is the inverse of the mean-latency ratio.
    None when either side has no samples or too few runs (``min_runs``).
    """
    quantile = QUANTILES[statistic]
    if not a or not b or min(len(a), len(b)) < min_runs(quantile):
        return None
    rng = np.random.default_rng(SEED)
    stat_a = _resampled(np.asarray(a, dtype=np.float64), quantile, rng)
    stat_b = _resampled(np.asarray(b, dtype=np.float64), quantile, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = stat_a / stat_b if inverse else stat_b / stat_a
    ratios = ratios[np.isfinite(ratios)]
    if len(ratios) < RESAMPLES // 2:
        return None
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return [round(float(low), 4), round(float(high), 4)]


def metric_interval(label: str, keys: tuple[str, ...], a: dict[str, Any], b: dict[str, Any]) -> list[float] | None:
    """The interval of one ``bench compare`` row (``COMPARED_METRICS`` entry), where the runs support one.

    Latency statistics come from ``latency_ms``; throughput (samples/s) is
    batch / mean latency, so its ratio scales the inverse mean ratio by B's
    batch over A's. Cold start, memory and micro-batch rows are single
    figures per result: no interval.
    """
    samples_a, samples_b = a.get("latency_samples_ms"), b.get("latency_samples_ms")
    if keys[:1] == ("latency_ms",) and keys[-1] in QUANTILES:
        return ratio_interval(samples_a, samples_b, keys[-1])
    if keys == ("throughput", "samples_per_s"):
        interval = ratio_interval(samples_a, samples_b, "mean", inverse=True)
        scale = b.get("batch", 1) / a.get("batch", 1)
        return None if interval is None else [round(v * scale, 4) for v in interval]
    return None
