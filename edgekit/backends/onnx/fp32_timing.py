"""Interleaved host timing of .onnx files, to say whether a candidate is slower than FP32.

The method (rounds in rotating order, median of per-round ratios) and the
record are format-neutral and live in ``edgekit.timing``, shared with the
TFLite backend so ``select.choose`` and reports read both alike. Here every
model gets an onnxruntime session in this process (CPU, one thread), timed
with ``perf_counter`` around ``session.run`` as validation times it.

Imports onnxruntime (through ``runtime``) and numpy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit import timing
from edgekit.bench import time_runs
from edgekit.timing import ROUNDS

SETTING = "onnxruntime sessions in one process"


def interleaved(paths: list[Path], feeds: dict[str, np.ndarray], rounds: int = ROUNDS) -> list[dict[str, Any]]:
    """``timing.interleaved`` over the .onnx files in ``paths`` (same order), at batch 1.

    ``feeds`` is one batch-1 sample keyed by input name (every model takes
    the same interface). A file onnxruntime cannot load raises ArtifactError.
    """
    from edgekit.backends.onnx.runtime import open_session

    sessions = [open_session(path, threads=1) for path in paths]
    timers = [lambda runs, warmup, s=s: time_runs(s, feeds, runs, warmup) for s in sessions]
    return timing.interleaved(timers, rounds)


def comparison(candidate: dict[str, Any], fp32: dict[str, Any]) -> dict[str, Any]:
    """What a candidate records about its speed against FP32 (both from one ``interleaved`` run)."""
    return timing.comparison(candidate, fp32, SETTING)
