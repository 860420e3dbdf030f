"""Interleaved host timing of .tflite files, to say whether a candidate is slower than FP32.

The method (rounds in rotating order, median of per-round ratios) and the
record are format-neutral and live in ``edgekit.timing``; this module only
opens the models: one LiteRT child process each, one thread, timed inside
the child (``time_runs``) so pipe overhead never enters the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit import timing
from edgekit.timing import BLOCK_SECONDS, MAX_RUNS, MIN_RUNS, ROUNDS, WARMUP_RUNS  # noqa: F401  (re-exported)

SETTING = "one process each"


def interleaved(paths: list[Path], feeds: dict[str, np.ndarray], rounds: int = ROUNDS) -> list[dict[str, Any]]:
    """``timing.interleaved`` over the .tflite files in ``paths`` (same order), at batch 1.

    ``feeds`` is one batch-1 sample keyed by input name (every model takes
    the same interface).
    """
    from edgekit.backends.tflite.runtime import open_session

    sessions = []
    try:
        for path in paths:
            sessions.append(open_session(path, threads=1))
        timers = [lambda runs, warmup, s=s: s.time_runs(feeds, runs, warmup) for s in sessions]
        return timing.interleaved(timers, rounds)
    finally:
        for session in sessions:
            session.close()


def comparison(candidate: dict[str, Any], fp32: dict[str, Any]) -> dict[str, Any]:
    """What a candidate records about its speed against FP32 (both from one ``interleaved`` run)."""
    return timing.comparison(candidate, fp32, SETTING)
