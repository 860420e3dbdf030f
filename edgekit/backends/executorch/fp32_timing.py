"""Interleaved host timing of ``.pte`` files, to say whether a candidate is slower than FP32.

The method and the record are format-neutral (``edgekit.timing``), as for ONNX
and TFLite: every program gets an ExecuTorch session in this process (XNNPACK,
one thread), timed with ``perf_counter`` around ``session.run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit import timing
from edgekit.bench import time_runs
from edgekit.timing import ROUNDS

SETTING = "ExecuTorch programs in one process"


def interleaved(paths: list[Path], feeds: dict[str, np.ndarray], rounds: int = ROUNDS) -> list[dict[str, Any]]:
    """``timing.interleaved`` over the ``.pte`` files in ``paths`` (same order), on ``feeds`` (one sample)."""
    from edgekit.backends.executorch.runtime import open_session

    sessions = [open_session(path, threads=1) for path in paths]
    try:
        timers = [lambda runs, warmup, s=s: time_runs(s, feeds, runs, warmup) for s in sessions]
        return timing.interleaved(timers, rounds)
    finally:
        for session in sessions:
            session.close()


def comparison(candidate: dict[str, Any], fp32: dict[str, Any]) -> dict[str, Any]:
    """What a candidate records about its speed against FP32 (both from one ``interleaved`` run)."""
    return timing.comparison(candidate, fp32, SETTING)
