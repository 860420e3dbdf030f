"""Keep float the few weights whose compression costs the most accuracy, measured with the emulator.

Post-training compression hurts some layers far more than others (measured:
per-tensor 4-bit tables on the sample Transformer's 32x32 attention matrices
cost 1.3 points of accuracy, the 2048-element MLP matrices almost nothing).
``protect`` runs the uncompressed and the compressed program on calibration
data; when their top-1 agreement is below ``AGREEMENT_TARGET`` it measures each
compressed weight alone (its decoded value swapped into the uncompressed
program) and returns the most damaging ones, greedily, until the rest agree.
The caller recompresses with those weights left float.

Needs only the emulator (no torch); costs one forward pass of the calibration
sample per compressed weight, and nothing when the candidate already agrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.backends.coreml import census
from edgekit.backends.coreml.emulator import Interpreter, load_package
from edgekit.backends.coreml.emulator.dtypes import numpy_dtype
from edgekit.backends.coreml.emulator.threads import blas_threads

AGREEMENT_TARGET = 0.99  # top-1 agreement with the uncompressed program: a 1-point accuracy budget
MAX_SAMPLES = 256
MAX_KEPT_FRACTION = 0.5  # never keep more than half the compressed elements float: the candidate would be pointless


@dataclass(frozen=True)
class Protection:
    """What ``protect`` found: agreement before, weights to keep float, agreement expected after."""

    before: float
    keep_float: tuple[str, ...]
    after: float


def _feeds(interpreter: Interpreter, calibration: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    feeds = {}
    for name, ttype in interpreter.function.inputs:
        feeds[name] = np.asarray(calibration[name][:MAX_SAMPLES]).astype(numpy_dtype(ttype.dtype))
    return feeds


def _agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Top-1 agreement for (N, C) scores; 1 - relative L2 error for anything else."""
    reference, candidate = reference.astype(np.float32), candidate.astype(np.float32)
    if reference.ndim == 2 and reference.shape[1] > 1:
        return float((reference.argmax(1) == candidate.argmax(1)).mean())
    return 1.0 - float(np.linalg.norm(reference - candidate) / max(np.linalg.norm(reference), 1e-12))


def protect(base_path: Path, candidate_path: Path, calibration: dict[str, np.ndarray],
            target: float = AGREEMENT_TARGET) -> Protection:
    """Base-program weight names to keep float so that the candidate agrees with the base on ``calibration``."""
    with blas_threads(1):  # one BLAS thread: faster on a shared machine (emulator/threads.py)
        return _protect(base_path, candidate_path, calibration, target)


def _protect(base_path: Path, candidate_path: Path, calibration: dict[str, np.ndarray], target: float) -> Protection:
    base_package, candidate_package = load_package(base_path), load_package(candidate_path)
    base, candidate = Interpreter(base_package), Interpreter(candidate_package)
    if not calibration or any(name not in calibration for name, _ in base.function.inputs):
        return Protection(1.0, (), 1.0)
    feeds = _feeds(base, calibration)
    output = base.function.outputs[0]
    reference = base.run(feeds)[output]
    before = _agreement(reference, candidate.run(feeds)[output])
    if before >= target:
        return Protection(before, (), before)
    # Pair each compressed weight with the base constant it replaced, by (consuming op, input).
    originals = {(w["op_name"], w["input"]): w for w in census.weights(base_package)}
    swaps: dict[str, tuple[np.ndarray, int]] = {}
    for weight in census.weights(candidate_package):
        original = originals.get((weight["op_name"], weight["input"]))
        if weight["precision"] in census.FLOAT_LABELS or original is None:
            continue
        decoded = candidate.constants[weight["name"]]
        swaps[original["name"]] = (decoded.astype(base.constants[original["name"]].dtype), weight["elements"])
    damage = {}
    for name, (value, _) in swaps.items():
        alone = base.run(feeds, {name: value})[output].astype(np.float32)
        damage[name] = float(np.mean((alone - reference) ** 2))
    total = sum(elements for _, elements in swaps.values())
    kept: list[str] = []
    best: tuple[float, tuple[str, ...]] = (before, ())
    for name in sorted(damage, key=damage.__getitem__, reverse=True):
        if sum(swaps[k][1] for k in kept) + swaps[name][1] > MAX_KEPT_FRACTION * total:
            continue
        kept.append(name)
        overrides = {k: v for k, (v, _) in swaps.items() if k not in kept}
        agreement = _agreement(reference, base.run(feeds, overrides)[output])
        if agreement > best[0]:
            best = (agreement, tuple(kept))  # keep only as many weights float as the best result needed
        if agreement >= target:
            break
    return Protection(before, best[1], best[0])
