"""The fidelity fallback search: keep the fewest weights float (or int8 instead of int4) until a
compressed candidate clears ``job.fidelity`` on calibration data, measured in the emulator.

Cost is what this module is about. A 224x224 MobileNetV2 runs at a few
tenths of a second per sample in the emulator, so the old search (one whole
emulated pass per compressed weight, 52 of them, on up to 256 samples, then
a greedy loop) took most of a 35-minute build. Now:

1. One emulated run of the candidate on a bounded sample (``SAMPLE`` = 64
   calibration samples) against ``job.reference`` (the FP32 torch outputs).
   If it meets the bar, that is all.
2. Otherwise the compressed weights are ranked by a cheap signal from *one*
   emulated pass of the uncompressed program on ``STATS_SAMPLES`` samples:
   the noise each weight's quantization adds at its op's output relative to
   that output's power, ``sum((W_q - W)^2 * E[x^2]) / E[y^2]`` with ``E[x^2]``
   the op's input energy per input channel (conv, linear, matmul), the
   gathered rows' error for embedding tables (``gather``), and the plain
   weight error for anything else. No per-weight run.
3. When even the uncompressed program (FP16 compute) misses the bar, the
   search aims just below its fidelity instead (``reachable``): nothing kept
   float can beat it, and the candidate still fails the bar's check.
4. The top of the ranking is kept float (int4 candidates: raised to int8
   first, which costs a quarter of float's bytes), growing geometrically from
   a first guess (the prefix that removes enough of the predicted noise to
   reach the bar) and bisecting down once a prefix passes: at most
   ``MAX_ROUNDS`` emulated runs, never more than ``MAX_KEPT_FRACTION`` of
   the compressed elements.

Each round swaps decoded weights into one interpreter of the uncompressed
program (``Interpreter.run(overrides=...)``), which computes exactly what the
recompressed program computes: coremltools quantizes each weight on its own.
The build then recompresses once with the chosen set and checks that the
saved weights equal the ones measured (``decoded_matches``).

Needs only the emulator and numpy (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import fidelity
from edgekit.backends.coreml import census
from edgekit.backends.coreml.emulator import Interpreter, load_package
from edgekit.backends.coreml.emulator.dtypes import numpy_dtype
from edgekit.backends.coreml.emulator.program import Operation, Package
from edgekit.backends.coreml.emulator.threads import blas_threads
from edgekit.backends.coreml.runtime import EMULATOR_CHUNK, fixed_batch, run_samples
from edgekit.fidelity import FidelityTarget

SAMPLE = 64  # calibration samples every fidelity measurement runs
STATS_SAMPLES = 16  # samples of the one pass that collects activation statistics
MAX_ROUNDS = 6  # emulated runs of the search after the first measurement
MAX_KEPT_FRACTION = 0.5  # never keep more than half the compressed elements wider: the candidate would be pointless
SIGNAL = (f"relative noise each weight's quantization adds at its op's output: sum((W_q - W)^2 * E[x^2]) / E[y^2], "
          f"input energy per channel from one emulated pass of the uncompressed program on {STATS_SAMPLES} "
          "calibration samples (embedding tables: error of the gathered rows)")


@dataclass(frozen=True)
class Ranked:
    """A compressed weight: its name in the uncompressed program, consumer, size and signal."""

    name: str
    op: str
    op_name: str
    elements: int
    error: float  # relative output noise power (SIGNAL); higher is worse


@dataclass(frozen=True)
class Outcome:
    """What the search found (``kept`` empty and ``rounds`` 0 when the candidate met the bar as it was)."""

    bar: FidelityTarget
    before: dict[str, float]
    after: dict[str, float]
    met: bool
    rounds: int
    kept: tuple[Ranked, ...] = ()
    kept_as: str = "float"  # "float" | "int8"
    samples: int = 0
    expected: dict[str, np.ndarray] = field(default_factory=dict)  # weight values the winning round ran with
    floor: dict[str, float] | None = None  # the uncompressed program's metrics, when measured
    target: FidelityTarget | None = None  # what the search aimed at when the uncompressed program misses ``bar``

    @property
    def searched(self) -> bool:
        return self.rounds > 0

    def record(self, module_of: Callable[[str, str], str | None]) -> dict[str, Any]:
        """``details["fallback"]`` (the format of the backend contract)."""
        return {
            "bar": self.bar.as_dict(), "before": self.before, "after": self.after, "met": self.met,
            "rounds": self.rounds, "signal": SIGNAL, "samples": self.samples, "kept_as": self.kept_as,
            "uncompressed": self.floor, "target": self.target.as_dict() if self.target else None,
            "kept_float": [{"name": w.name, "op": w.op, "module": module_of(w.name, w.op_name),
                            "error": float(f"{w.error:.4g}"), "elements": w.elements} for w in self.kept],
        }


class Evaluator:
    """The uncompressed program and a bounded calibration sample; runs it with weights swapped in."""

    def __init__(self, base: Package, calibration: dict[str, np.ndarray], output_names: tuple[str, ...],
                 reference: tuple[np.ndarray, ...], bar: FidelityTarget | None, precision: str) -> None:
        self.interpreter = Interpreter(base)
        function = self.interpreter.function
        self.fixed = fixed_batch(base)
        count = min(SAMPLE, min(len(v) for v in calibration.values()))
        self.feeds = {name: np.asarray(calibration[name][:count]).astype(numpy_dtype(ttype.dtype))
                      for name, ttype in function.inputs}
        outputs = set(function.outputs)
        self.outputs = tuple(n for n in output_names if n in outputs) or tuple(function.outputs)
        if reference and len(reference) == len(self.outputs):
            self.reference = [np.asarray(r[:count], dtype=np.float32) for r in reference]
        else:  # no FP32 reference given: judge against the uncompressed program itself
            self.reference = self.run({})
        self.bar = bar if bar is not None and bar.required else default_bar(precision, self.reference)
        self.samples = count
        self._floor: dict[str, float] | None = None
        self._stats: dict[tuple[str, str], OpStats] | None = None

    def stats(self, base: Package) -> dict[tuple[str, str], OpStats]:
        """Activation statistics of the uncompressed program (one pass, shared by every recipe of the job)."""
        if self._stats is None:
            self._stats = collect_stats(self, base)
        return self._stats

    def floor(self) -> dict[str, float]:
        """Metrics of the uncompressed program (FP16 compute, fp16 weights): the best any candidate can reach."""
        if self._floor is None:
            self._floor = self.measure({})
        return self._floor

    def run(self, overrides: dict[str, np.ndarray], feeds: dict[str, np.ndarray] | None = None,
            observe: Callable[[Operation, dict[str, Any]], None] | None = None) -> list[np.ndarray]:
        def call(chunk: dict[str, np.ndarray]) -> list[np.ndarray]:
            result = self.interpreter.run(chunk, overrides, observe)
            return [result[n].astype(np.float32) for n in self.outputs]

        return run_samples(call, feeds if feeds is not None else self.feeds, self.fixed, EMULATOR_CHUNK)

    def measure(self, overrides: dict[str, np.ndarray]) -> dict[str, float]:
        return fidelity.measure(self.run(overrides), self.reference)


def default_bar(precision: str, reference: list[np.ndarray]) -> FidelityTarget:
    """The default quality bar of ``precision`` (for callers that give no ``job.fidelity``)."""
    from edgekit.config import DEFAULT_QUALITY

    bar = DEFAULT_QUALITY.get(precision, DEFAULT_QUALITY["int8"])
    classes = fidelity.has_classes(reference)
    return FidelityTarget(bar.min_cosine, bar.min_top1_agreement if classes else None, bar.min_sqnr_db)


def swaps(base: Package, base_constants: dict[str, Any], candidate_path: Path) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Compressed weights of a candidate: base weight name → (decoded value in the base dtype, base census entry).

    Weights are paired with the base constant they replaced by (consuming op, input).
    """
    candidate = load_package(candidate_path)
    decoded = Interpreter(candidate).constants
    originals = {(w["op_name"], w["input"]): w for w in census.weights(base)}
    found: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
    for weight in census.weights(candidate):
        original = originals.get((weight["op_name"], weight["input"]))
        if weight["precision"] in census.FLOAT_LABELS or original is None:
            continue
        value = decoded[weight["name"]].astype(base_constants[original["name"]].dtype)
        found[original["name"]] = (value, {**original, "compressed_name": weight["name"]})
    return found


# ---------------------------------------------------------------------------------------------- signal


@dataclass
class OpStats:
    """What the one statistics pass saw at a weight-consuming op (summed over chunks)."""

    energy: np.ndarray | None = None  # sum of E[x^2] per input channel (conv, linear, matmul)
    axis: int = 1  # axis of the weight that multiplies those channels
    power: float = 0.0  # sum of E[y^2] of the op's output
    counts: np.ndarray | None = None  # gather: how often each row was read
    groups: int = 1
    chunks: int = 0


def _input_energy(op: Operation, env: dict[str, Any], weight_input: str) -> tuple[np.ndarray | None, int]:
    """(E[x^2] per input channel of the op, axis of W that multiplies it) for conv/linear/matmul; (None, 0) otherwise."""
    if op.type in ("linear", "conv") and weight_input == "weight":
        x = np.asarray(env[op.inputs["x"][0].name], dtype=np.float32)
        axes = tuple(a for a in range(x.ndim) if a != (x.ndim - 1 if op.type == "linear" else 1))
        return np.mean(np.square(x, dtype=np.float64), axis=axes), 1
    if op.type == "matmul" and weight_input == "y":
        x = np.asarray(env[op.inputs["x"][0].name], dtype=np.float32)
        contraction = x.ndim - 2 if _flag(op, env, "transpose_x") else x.ndim - 1
        axes = tuple(a for a in range(x.ndim) if a != contraction)
        return np.mean(np.square(x, dtype=np.float64), axis=axes), (0 if not _flag(op, env, "transpose_y") else 1)
    return None, 0


def _flag(op: Operation, env: dict[str, Any], name: str) -> bool:
    args = op.inputs.get(name)
    if not args:
        return False
    value = args[0].value if args[0].name is None else env.get(args[0].name)
    return bool(np.asarray(value).reshape(-1)[0]) if value is not None else False


def collect_stats(evaluator: Evaluator, base: Package) -> dict[tuple[str, str], OpStats]:
    """One emulated pass of the uncompressed program on STATS_SAMPLES samples: OpStats per (op, weight input)."""
    constants = evaluator.interpreter.constants
    wanted: dict[str, list[str]] = {}
    for weight in census.weights(base):
        wanted.setdefault(weight["op_name"], []).append(weight["input"])
    stats: dict[tuple[str, str], OpStats] = {}
    for op in base.main.operations:
        for param in wanted.get(op.name, ()):
            groups = 1
            if op.type == "conv" and op.inputs.get("groups") and op.inputs["groups"][0].name:
                groups = int(np.asarray(constants.get(op.inputs["groups"][0].name, 1)).reshape(-1)[0])
            stats[(op.name, param)] = OpStats(groups=groups)

    def observe(op: Operation, env: dict[str, Any]) -> None:
        for param in wanted.get(op.name, ()):
            found = stats[(op.name, param)]
            output = np.asarray(env[op.outputs[0][0]], dtype=np.float32)
            found.power += float(np.mean(np.square(output, dtype=np.float64)))
            energy, found.axis = _input_energy(op, env, param)
            if energy is not None:
                found.energy = energy if found.energy is None else found.energy + energy
            if op.type == "gather" and param == "x" and "indices" in op.inputs:
                rows = int(np.asarray(constants[op.inputs["x"][0].name]).shape[0])
                indices = np.asarray(env[op.inputs["indices"][0].name]).reshape(-1).astype(np.int64)
                counts = np.bincount(indices[(indices >= 0) & (indices < rows)], minlength=rows)
                found.counts = counts if found.counts is None else found.counts + counts
            found.chunks += 1

    evaluator.run({}, {k: v[:STATS_SAMPLES] for k, v in evaluator.feeds.items()}, observe)
    return stats


def _noise(op_type: str, param: str, stats: OpStats, delta: np.ndarray) -> float:
    """Noise power one weight's error adds per output element of its op (summed over the pass's chunks)."""
    squared = np.square(delta.astype(np.float64))
    energy = stats.energy
    if energy is not None and op_type == "conv":  # (C_out, C_in / groups, *K): channel c_in of group g
        c_out, c_group = delta.shape[0], delta.shape[1]
        per_group = energy.reshape(stats.groups, c_group)[np.arange(c_out) // (c_out // stats.groups)]
        per_channel = squared.reshape(c_out, c_group, -1).sum(axis=2)
        return float((per_channel * per_group).sum() / c_out)
    if energy is not None and delta.ndim == 2:
        if stats.axis == 1:  # (out, in) @ x: out element o gets sum_j dW[o, j]^2 E[x_j^2]
            return float((squared * energy[None, :]).sum() / delta.shape[0])
        return float((squared * energy[:, None]).sum() / delta.shape[1])
    if op_type == "gather" and param == "x" and stats.counts is not None and stats.counts.sum():
        rows = squared.reshape(delta.shape[0], -1).mean(axis=1)
        return float((rows * stats.counts).sum() / stats.counts.sum()) * stats.chunks
    return float(squared.mean()) * max(stats.chunks, 1)


def rank(evaluator: Evaluator, base: Package, pairs: dict[str, tuple[np.ndarray, dict[str, Any]]]) -> list[Ranked]:
    """Compressed weights, worst first, by SIGNAL (activation statistics from one pass per job)."""
    constants = evaluator.interpreter.constants
    stats = evaluator.stats(base)
    ranked = []
    for name, (value, entry) in pairs.items():
        found = stats.get((entry["op_name"], entry["input"]), OpStats())
        delta = value.astype(np.float32) - np.asarray(constants[name], dtype=np.float32)
        error = _noise(entry["op"], entry["input"], found, delta) / (found.power or 1e-30)
        ranked.append(Ranked(name, entry["op"], entry["op_name"], int(entry["elements"]), error))
    return sorted(ranked, key=lambda w: (-w.error, w.elements))


# ---------------------------------------------------------------------------------------------- search


def _first_guess(ranked: list[Ranked], before: dict[str, float], floor: dict[str, float], bar: FidelityTarget,
                 limit: int) -> int:
    """The shortest prefix that removes enough predicted noise to reach the bar.

    The weights' share of the noise is what ``before`` adds over the
    uncompressed program (``floor``); each weight's share of that is taken
    proportional to its signal. Cosine and top-1 distance scale like noise
    power for small errors.
    """
    allowed = 1.0
    pairs = []
    if bar.min_sqnr_db is not None and "sqnr_db" in before:
        to_noise = lambda db: 10 ** (-db / 10)  # noqa: E731
        pairs.append((to_noise(before["sqnr_db"]), to_noise(floor.get("sqnr_db", 300.0)), to_noise(bar.min_sqnr_db)))
    for key, metric in (("min_cosine", "cosine"), ("min_top1_agreement", "top1_agreement")):
        limit_value = getattr(bar, key)
        if limit_value is not None and metric in before:
            pairs.append((1.0 - before[metric], 1.0 - floor.get(metric, 1.0), 1.0 - limit_value))
    for now, base, target in pairs:
        if now > target and now > base:
            allowed = min(allowed, max(target - base, 0.0) / (now - base))
    total = sum(w.error for w in ranked) or 1.0
    remaining = total
    for k, weight in enumerate(ranked[:limit], start=1):
        remaining -= weight.error
        if remaining <= allowed * total * 0.8:  # a margin: the prediction ignores how noise propagates
            return k
    return limit


def _eligible(ranked: list[Ranked]) -> list[Ranked]:
    """The ranking without the weights that would take the kept elements past MAX_KEPT_FRACTION (in order)."""
    total = sum(w.elements for w in ranked)
    kept, found = 0, []
    for weight in ranked:
        if kept + weight.elements <= MAX_KEPT_FRACTION * total:
            kept += weight.elements
            found.append(weight)
    return found


def _score(metrics: dict[str, float]) -> tuple[float, ...]:
    return (metrics.get("top1_agreement", 1.0), metrics.get("cosine", 0.0), metrics.get("sqnr_db", math.inf))


def search(evaluator: Evaluator, base: Package, pairs: dict[str, tuple[np.ndarray, dict[str, Any]]],
           raise_to: Callable[[], dict[str, np.ndarray]] | None = None) -> Outcome:
    """Measure the candidate (decoded ``pairs``); when it misses the bar, find the fewest weights to keep wider.

    ``raise_to`` gives int8 decodings of the same weights (int4 candidates;
    called only when a search runs): the kept weights use those first, and
    float only if int8 cannot clear the bar.
    """
    with blas_threads(1):  # one BLAS thread: faster on a shared machine (emulator/threads.py)
        return _search(evaluator, base, pairs, raise_to)


def _search(evaluator: Evaluator, base: Package, pairs: dict[str, tuple[np.ndarray, dict[str, Any]]],
            raise_to: Callable[[], dict[str, np.ndarray]] | None) -> Outcome:
    compressed = {name: value for name, (value, _) in pairs.items()}
    evaluator.interpreter.promote(compressed)
    bar = evaluator.bar
    before = evaluator.measure(compressed)
    if bar.met_by(before) or not pairs:
        return Outcome(bar, before, before, bar.met_by(before), 0, samples=evaluator.samples, expected=compressed)
    floor = evaluator.floor()
    target = bar if bar.met_by(floor) else reachable(bar, floor)
    if target.met_by(before):
        return Outcome(bar, before, before, False, 0, samples=evaluator.samples, expected=compressed, floor=floor,
                       target=target)
    ranked = _eligible(rank(evaluator, base, pairs))
    limit = len(ranked)
    if limit == 0:
        return Outcome(bar, before, before, False, 0, samples=evaluator.samples, expected=compressed)
    raised = raise_to() if raise_to is not None else {}
    modes = (["int8"] if raised else []) + ["float"]
    evaluator.interpreter.promote(raised)
    tried: dict[tuple[str, int], dict[str, float]] = {}
    rounds = 0

    def overrides(mode: str, k: int) -> dict[str, np.ndarray]:
        kept = {w.name for w in ranked[:k]}
        chosen = {n: v for n, v in compressed.items() if n not in kept}
        if mode == "int8":
            chosen.update({n: raised[n] for n in kept if n in raised})
        return chosen

    def evaluate(mode: str, k: int) -> dict[str, float]:
        nonlocal rounds
        if (mode, k) not in tried:
            tried[(mode, k)] = evaluator.measure(overrides(mode, k))
            rounds += 1
        return tried[(mode, k)]

    passing: tuple[str, int] | None = None
    k = max(1, min(limit, _first_guess(ranked, before, floor, target, limit)))
    for mode in modes:
        low, high = 0, None  # longest prefix known to fail, shortest known to pass
        while rounds < MAX_ROUNDS:
            if target.met_by(evaluate(mode, k)):
                high = k
            else:
                low = k
            if high is None:
                if k >= limit:
                    break
                k = min(limit, max(k + 1, 2 * k))
            else:
                if high - low <= 1:
                    break
                k = (low + high) // 2
        if high is not None:
            passing = (mode, high)
            break
        k = limit  # int8 could not clear the bar: float for the same prefix, then bisect down
    if passing is None:  # nothing cleared the bar: keep the best configuration measured, say it missed
        passing = max(tried, key=lambda key: _score(tried[key]))
    mode, k = passing
    return Outcome(bar, before, tried[passing], bar.met_by(tried[passing]), rounds, tuple(ranked[:k]), mode,
                   evaluator.samples, overrides(mode, k), floor, None if target is bar else target)


def reachable(bar: FidelityTarget, floor: dict[str, float]) -> FidelityTarget:
    """``bar`` lowered, metric by metric, to just below what the uncompressed program reaches where it misses.

    FP16 compute alone can miss a bar (a random-weight MobileNetV2: top-1
    agreement 0.84 against FP32); keeping weights float cannot beat that, so
    the search then aims at the uncompressed program's own fidelity instead.
    """
    cosine, top1, sqnr = bar.min_cosine, bar.min_top1_agreement, bar.min_sqnr_db
    if cosine is not None and floor.get("cosine", 1.0) < cosine:
        cosine = 1.0 - (1.0 - floor["cosine"]) * 1.25
    if top1 is not None and floor.get("top1_agreement", 1.0) < top1:
        top1 = floor["top1_agreement"] - 0.03
    if sqnr is not None and "sqnr_db" in floor and floor["sqnr_db"] < sqnr:
        sqnr = floor["sqnr_db"] - 1.0
    return FidelityTarget(cosine, top1, sqnr)


def decoded_matches(outcome: Outcome, base_constants: dict[str, Any], final_path: Path, base: Package) -> bool:
    """Whether the recompressed package stores exactly the weights the search measured."""
    final = swaps(base, base_constants, final_path)
    expected = outcome.expected
    if set(final) != set(expected):
        return False
    return all(np.array_equal(final[n][0], expected[n]) for n in expected)
