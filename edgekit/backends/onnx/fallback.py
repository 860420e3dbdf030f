"""Budgeted fallback search: keep the fewest nodes out of a low precision until the fidelity bar is met.

Used by static and dynamic INT8 (nodes kept float) and INT4 (layers raised
to int8). Two parts:

**Signals** rank the units of the search:

- ``rank_tensors`` (static): every activation tensor the QDQ candidate
  quantizes, by its *local* quantization noise: the FP32 model's values of
  the tensor against the same values quantized with the candidate's own
  scale and zero point, ``n = sum((q - f)^2) / sum(f^2)``. Upstream noise
  cannot leak into it, so it points at the QuantizeLinear/DequantizeLinear
  pairs that do the damage (a residual stream whose outlier channels stretch
  a per-tensor range). A tensor's unit is every quantized node producing or
  reading it: all must stay float for its pair to go. One FP32 pass.
  Measured on MiniLM: excluding the touching nodes of the worst 48 tensors
  reached cosine 0.995; the node-level signal below, on the same model,
  stayed at 0.86 with 42 nodes out (every node there sits on an already
  noisy input, so what each *adds* says little).
- ``rank`` (dynamic, int4): every quantized node by the noise it adds,
  ``n(output as consumers read it) - max n(float inputs)`` between the FP32
  model and the all-quantized candidate (quantizers keep tensor names),
  clamped at 0. Linear noise rather than an SQNR difference in dB: a clean
  first layer going from 120 dB to 60 dB adds nothing that matters, a layer
  going from 20 dB to 10 dB does.

Both use the first ``SIGNAL_SAMPLES`` calibration samples, ``SIGNAL_CHUNK``
at a time (or the model's fixed batch), accumulating sums so memory does not
grow with the data.

**Search** (``search``): the most damaging units first, sets growing
geometrically (1, then by a ratio that reaches ``MAX_SHARE`` of the units in
``GEOMETRIC_ROUNDS`` rounds), then bisection between the last size that
missed and the first that met, ``MAX_ROUNDS`` trials in all. Each trial
requantizes (static: from the cached calibration, no new calibration run)
and measures fidelity on the calibration split against the FP32 outputs.
Cost: one signal pass plus at most ``MAX_ROUNDS`` quantize+evaluate rounds,
whatever the graph size (MiniLM, 212 nodes, 181 quantized tensors: 8 rounds
with the 7-bit step, ~3 min on a busy 2-core host).

Imports onnxruntime and onnx; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgekit.batching import pad_to
from edgekit.fidelity import FidelityTarget, measure

SIGNAL_SAMPLES = 32
SIGNAL_CHUNK = 4  # samples per run while collecting intermediates (bounds memory on big graphs)
GEOMETRIC_ROUNDS = 5
MAX_ROUNDS = 7
MAX_SHARE = 0.5  # keeping more than half the candidates out of the precision is not that precision any more
SIGNAL = ("relative noise power each quantized node adds (its output's minus its worst float input's), "
          "FP32 vs the all-quantized model on {n} calibration samples")


def session(model: onnx.ModelProto | Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session (quiet); ``threads`` 0 lets onnxruntime choose."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto | Path | Any, feeds: dict[str, np.ndarray], fixed_batch: int | None = None,
        chunk: int = 32) -> list[np.ndarray]:
    """All outputs of ``model`` (a path, a ModelProto or a session) on ``feeds``, in chunks it accepts."""
    sess = model if hasattr(model, "run") else session(model)
    names = [i.name for i in sess.get_inputs()]
    count = len(next(iter(feeds.values())))
    step = fixed_batch or chunk
    parts: list[list[np.ndarray]] = []
    for start in range(0, count, step):
        batch = {k: feeds[k][start : start + step] for k in names}
        real = len(next(iter(batch.values())))
        if fixed_batch:
            batch, real = pad_to(batch, fixed_batch)
        outputs = sess.run(None, batch)
        if not parts:
            parts = [[] for _ in outputs]
        for slot, out in zip(parts, outputs, strict=True):
            slot.append(np.asarray(out)[:real])
    return [np.concatenate(p) for p in parts]


def fidelity(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray], reference: Sequence[np.ndarray],
             fixed_batch: int | None = None) -> dict[str, float]:
    """``edgekit.fidelity.measure`` of ``model``'s outputs on ``feeds`` against ``reference``."""
    outputs = run(model, feeds, fixed_batch)
    return measure(outputs[: len(reference)], list(reference))


# ----------------------------------------------------------------- signal


@dataclass(frozen=True)
class Suspect:
    """A unit of the search and the error it causes: a quantized node, or a quantized tensor.

    ``nodes`` are the node names (in the reference graph) to keep out of the
    low precision to remove the error: the node itself, or for a tensor the
    quantized nodes that produce or read it (all of them, or its
    QuantizeLinear/DequantizeLinear pair stays).
    """

    name: str
    op: str
    error: float
    nodes: tuple[str, ...] = ()
    sqnr_db: float | None = None

    def members(self) -> tuple[str, ...]:
        return self.nodes or (self.name,)


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of float32 tensors in ``model`` (after shape inference), graph inputs included."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is best effort; without it only declared values are known
        inferred = model
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name for v in values if v.type.tensor_type.elem_type == TensorProto.FLOAT}


def _exposed(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensors`` (float32)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in dict.fromkeys(tensors):
        if name not in present:
            out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return out


def _noise(reference: onnx.ModelProto, candidate: onnx.ModelProto, pairs: list[tuple[str, str]],
           feeds: dict[str, np.ndarray], fixed_batch: int | None) -> dict[str, float]:
    """Relative noise power of each candidate tensor against its reference tensor on ``feeds``.

    ``pairs`` holds (reference name, candidate name); the result is keyed by candidate name.
    """
    ref_names = list(dict.fromkeys(r for r, _ in pairs))
    cand_names = list(dict.fromkeys(c for _, c in pairs))
    signal = dict.fromkeys(cand_names, 0.0)
    noise = dict.fromkeys(cand_names, 0.0)
    ref_session = session(_exposed(reference, ref_names))
    cand_session = session(_exposed(candidate, cand_names))
    chunk = fixed_batch or SIGNAL_CHUNK
    count = len(next(iter(feeds.values())))
    for start in range(0, count, chunk):
        batch = {k: v[start : start + chunk] for k, v in feeds.items()}
        real = len(next(iter(batch.values())))
        if fixed_batch:
            batch, real = pad_to(batch, fixed_batch)
        ref_out = dict(zip(ref_names, ref_session.run(ref_names, {i.name: batch[i.name] for i in ref_session.get_inputs()}), strict=True))
        cand_out = dict(zip(cand_names, cand_session.run(cand_names, {i.name: batch[i.name] for i in cand_session.get_inputs()}), strict=True))
        for ref_name, cand_name in pairs:
            f64 = np.asarray(ref_out[ref_name], dtype=np.float64)[:real]
            q64 = np.asarray(cand_out[cand_name], dtype=np.float64)[:real]
            if f64.shape != q64.shape:
                continue
            signal[cand_name] += float(np.sum(f64 * f64))
            noise[cand_name] += float(np.sum((q64 - f64) ** 2))
    return {n: noise[n] / signal[n] if signal[n] > 0 else (0.0 if noise[n] == 0 else math.inf) for n in cand_names}


def _as_consumed(model: onnx.ModelProto, tensor: str) -> str:
    """The version of ``tensor`` its consumers read in ``model``: after a QuantizeLinear -> DequantizeLinear pair if any."""
    quantize = next((n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor), None)
    if quantize is None:
        return tensor
    dequantize = next((n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == quantize.output[0]), None)
    return dequantize.output[0] if dequantize is not None else tensor


def rank(reference: onnx.ModelProto, candidate: onnx.ModelProto, nodes: Sequence[str],
         feeds: dict[str, np.ndarray], fixed_batch: int | None = None) -> list[Suspect]:
    """``nodes`` (names in ``reference``) ordered by the error each adds in ``candidate``, largest first.

    A node's inputs are measured as their producers wrote them and its
    output as its consumers read it (after the output's QuantizeLinear /
    DequantizeLinear pair, when the candidate has one), so the error covers
    the quantization of its input and output activations and of its
    weights. Only the first ``SIGNAL_SAMPLES`` samples of ``feeds`` are
    used. Nodes whose output the candidate does not have get error 0 and rank last.
    """
    feeds = {k: v[:SIGNAL_SAMPLES] for k, v in feeds.items()}
    floats = _float_tensors(reference)
    inits = {t.name for t in reference.graph.initializer}
    by_name = {n.name: n for n in reference.graph.node}
    in_candidate = {o for n in candidate.graph.node for o in n.output} | {i.name for i in candidate.graph.input}
    plan: dict[str, tuple[list[str], str, str]] = {}
    for name in nodes:
        node = by_name.get(name)
        if node is None or not node.output or node.output[0] not in floats or node.output[0] not in in_candidate:
            continue
        inputs = [i for i in node.input if i and i not in inits and i in floats and i in in_candidate]
        plan[name] = (inputs, node.output[0], _as_consumed(candidate, node.output[0]))
    graph_inputs = {i.name for i in reference.graph.input}
    # Pairs (name in reference, name in candidate) to compare.
    pairs = sorted({(t, t) for inputs, _, _ in plan.values() for t in inputs if t not in graph_inputs}
                   | {(out, seen) for _, out, seen in plan.values()})
    noise = _noise(reference, candidate, pairs, feeds, fixed_batch) if pairs else {}
    suspects = []
    for name in nodes:
        node = by_name.get(name)
        op = node.op_type if node is not None else "?"
        if name not in plan:
            suspects.append(Suspect(name, op, 0.0))
            continue
        inputs, out, seen = plan[name]
        out_noise = noise.get(seen, 0.0)
        in_noise = max((noise.get(i, 0.0) for i in inputs), default=0.0)
        error = max(out_noise - in_noise, 0.0) if math.isfinite(out_noise) else 1e9
        sqnr = -10 * math.log10(out_noise) if 0 < out_noise < math.inf else None
        suspects.append(Suspect(name, op, error, (name,), sqnr))
    return sorted(suspects, key=lambda s: -s.error)


def rank_tensors(reference: onnx.ModelProto, candidate: onnx.ModelProto, quantizable: set[str],
                 feeds: dict[str, np.ndarray], fixed_batch: int | None = None) -> list[Suspect]:
    """The activation tensors ``candidate`` (a QDQ model) quantizes, by their local quantization noise, largest first.

    Each tensor's noise is measured where it arises: the FP32 model's values
    of the tensor against those values quantized and dequantized with the
    candidate's own scale and zero point. Unlike a comparison of the two
    models' tensors, upstream noise does not leak into downstream tensors,
    so the ranking points at the QuantizeLinear/DequantizeLinear pairs that
    do the damage (activation outliers stretching a per-tensor range). A
    tensor's ``nodes`` are the nodes in ``quantizable`` that produce or read
    it; only one FP32 pass on ``SIGNAL_SAMPLES`` samples is needed.
    """
    from onnx import numpy_helper

    feeds = {k: v[:SIGNAL_SAMPLES] for k, v in feeds.items()}
    values = {t.name: t for t in candidate.graph.initializer}
    params: dict[str, tuple[float, int, int, int]] = {}
    for node in candidate.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in values or len(node.input) < 2:
            continue
        scale = numpy_helper.to_array(values[node.input[1]]) if node.input[1] in values else None
        if scale is None or scale.size != 1:
            continue
        zero = values.get(node.input[2]) if len(node.input) > 2 else None
        zero_point = int(numpy_helper.to_array(zero).ravel()[0]) if zero is not None else 0
        signed = zero is not None and zero.data_type == TensorProto.INT8
        low, high = (-128, 127) if signed else (0, 255)
        params[node.input[0]] = (float(scale.ravel()[0]), zero_point, low, high)
    floats = _float_tensors(reference)
    graph_inputs = {i.name for i in reference.graph.input}
    tensors = sorted(t for t in params if t in floats or t in graph_inputs)
    if not tensors:
        return []
    produced = {o: n for n in reference.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in reference.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    signal = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    exposed = [t for t in tensors if t not in graph_inputs]
    ref_session = session(_exposed(reference, exposed))
    chunk = fixed_batch or SIGNAL_CHUNK
    count = len(next(iter(feeds.values())))
    for start in range(0, count, chunk):
        batch = {k: v[start : start + chunk] for k, v in feeds.items()}
        real = len(next(iter(batch.values())))
        if fixed_batch:
            batch, real = pad_to(batch, fixed_batch)
        outputs = dict(zip(exposed, ref_session.run(exposed, {i.name: batch[i.name] for i in ref_session.get_inputs()}) if exposed else [], strict=True))
        for name in tensors:
            x = np.asarray(outputs[name] if name in outputs else batch[name], dtype=np.float64)[:real]
            scale, zero_point, low, high = params[name]
            q = (np.clip(np.round(x / scale) + zero_point, low, high) - zero_point) * scale
            signal[name] += float(np.sum(x * x))
            noise[name] += float(np.sum((q - x) ** 2))
    suspects = []
    for name in tensors:
        relative = noise[name] / signal[name] if signal[name] > 0 else 0.0
        producer = produced.get(name)
        members = [producer.name] if producer is not None and producer.name in quantizable else []
        members += [n.name for n in readers.get(name, []) if n.name in quantizable and n.name not in members]
        if not members:
            continue
        op = producer.op_type if producer is not None else "input"
        sqnr = -10 * math.log10(relative) if relative > 0 else None
        suspects.append(Suspect(name, op, relative, tuple(members), sqnr))
    return sorted(suspects, key=lambda s: -s.error)


def input_energy(model: onnx.ModelProto, nodes: Sequence[str], feeds: dict[str, np.ndarray],
                 fixed_batch: int | None = None) -> dict[str, np.ndarray]:
    """Per node: the mean square of each feature (last axis) of its first input, on ``SIGNAL_SAMPLES`` samples.

    What a weight multiplies: the importance ``weights.symmetric`` weighs its
    rounding error with (a diagonal approximation of the output error).
    """
    feeds = {k: v[:SIGNAL_SAMPLES] for k, v in feeds.items()}
    by_name = {n.name: n for n in model.graph.node}
    graph_inputs = {i.name for i in model.graph.input}
    wanted = {name: by_name[name].input[0] for name in nodes if name in by_name and by_name[name].input}
    tensors = sorted(set(wanted.values()) - graph_inputs)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = dict.fromkeys(wanted.values(), 0)
    sess = session(_exposed(model, tensors))
    chunk = fixed_batch or SIGNAL_CHUNK
    count = len(next(iter(feeds.values())))
    for start in range(0, count, chunk):
        batch = {k: v[start : start + chunk] for k, v in feeds.items()}
        real = len(next(iter(batch.values())))
        if fixed_batch:
            batch, real = pad_to(batch, fixed_batch)
        values = dict(zip(tensors, sess.run(tensors, {i.name: batch[i.name] for i in sess.get_inputs()}) if tensors else [], strict=True))
        for name in set(wanted.values()):
            x = np.asarray(values[name] if name in values else batch[name], dtype=np.float64)[:real]
            rows = x.reshape(-1, x.shape[-1])
            sums[name] = sums.get(name, 0) + np.sum(rows * rows, axis=0)
            counts[name] += len(rows)
    return {node: sums[t] / max(counts[t], 1) for node, t in wanted.items() if t in sums}


# ----------------------------------------------------------------- search


def schedule(count: int) -> list[int]:
    """The exclusion-set sizes tried before bisection: 1, then geometric up to MAX_SHARE of ``count``.

    Never all of them: a candidate with every unit kept out is not in its
    precision any more (it would be dropped), so one unit alone gets no search.
    """
    cap = min(math.ceil(count * MAX_SHARE), count - 1)
    if cap < 1:
        return []
    if cap == 1:
        return [1]
    ratio = max(2.0, cap ** (1 / (GEOMETRIC_ROUNDS - 1)))
    sizes: list[int] = []
    k = 1.0
    while len(sizes) < GEOMETRIC_ROUNDS:
        size = min(cap, max(round(k), (sizes[-1] + 1) if sizes else 1))
        sizes.append(size)
        if size >= cap:
            break
        k *= ratio
    return sizes


@dataclass
class Outcome:
    """What a search found: the trial that met the bar with the fewest nodes kept (or the best miss)."""

    kept: list[Suspect]
    metrics: dict[str, float]
    met: bool
    rounds: int
    path: Path | None
    tried: list[dict[str, Any]] = field(default_factory=list)


Trial = Callable[[list[str]], tuple[Path, dict[str, float]]]


def score(metrics: dict[str, float], bar: FidelityTarget) -> float:
    """The smallest margin of ``metrics`` over ``bar`` (negative: missed; larger is better), for comparing trials.

    SQNR margins count in units of 30 dB so they weigh like cosine margins.
    """
    margins = []
    for key, metric in (("min_cosine", "cosine"), ("min_top1_agreement", "top1_agreement"), ("min_sqnr_db", "sqnr_db")):
        limit = getattr(bar, key)
        if limit is not None and metric in metrics:
            margins.append((metrics[metric] - limit) / (30.0 if metric == "sqnr_db" else 1.0))
    return min(margins) if margins else 0.0


def members(suspects: Sequence[Suspect]) -> list[str]:
    """The node names ``suspects`` keep out, in rank order, each once."""
    return list(dict.fromkeys(n for s in suspects for n in s.members()))


def search(suspects: Sequence[Suspect], trial: Trial, bar: FidelityTarget) -> Outcome:
    """Keep the top-k ``suspects`` out, k growing per ``schedule`` then bisected, until ``bar`` is met.

    ``trial(names)`` builds the candidate with ``names`` kept out and returns
    its path and fidelity metrics on the calibration split. At most
    ``MAX_ROUNDS`` trials. Returns the smallest k that met the bar, or the
    trial closest to it when none did.
    """
    order = [s for s in suspects if s.error > 0] or list(suspects)
    results: dict[int, tuple[Path, dict[str, float]]] = {}
    tried: list[dict[str, Any]] = []

    def attempt(k: int) -> bool:
        path, metrics = trial(members(order[:k]))
        results[k] = (path, metrics)
        tried.append({"kept": k, **{m: round(v, 6) for m, v in metrics.items()}})
        return bar.met_by(metrics)

    missed, met_at = 0, None
    for k in schedule(len(order)):
        if k > len(order):
            break
        if attempt(k):
            met_at = k
            break
        missed = k
    while met_at is not None and len(results) < MAX_ROUNDS and met_at - missed > 1:
        middle = max(missed + 1, round(math.sqrt(missed * met_at)) if missed else met_at // 2)
        middle = min(middle, met_at - 1)
        if attempt(middle):
            met_at = middle
        else:
            missed = middle
    if met_at is not None:
        path, metrics = results[met_at]
        return Outcome(list(order[:met_at]), metrics, True, len(results), path, tried)
    best = max(results, key=lambda k: score(results[k][1], bar)) if results else 0
    path, metrics = results.get(best, (None, {}))
    return Outcome(list(order[:best]), metrics, False, len(results), path, tried)


def kept_nodes(kept: Sequence[Suspect], module_of: Callable[[str], str | None],
               op_of: Callable[[str], str]) -> list[dict[str, Any]]:
    """One entry per node kept out (name, op, module, the error of the unit that put it there)."""
    rows: dict[str, dict[str, Any]] = {}
    for suspect in kept:
        for name in suspect.members():
            if name not in rows:
                rows[name] = {"name": name, "op": op_of(name), "module": module_of(name),
                              "error": round(suspect.error, 8)}
                if suspect.nodes and suspect.name != name:
                    rows[name]["because_of"] = suspect.name
    return list(rows.values())


def record(bar: FidelityTarget, before: dict[str, float], outcome: Outcome, signal: str,
           module_of: Callable[[str], str | None], op_of: Callable[[str], str], action: str,
           steps: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """``details["fallback"]`` for a candidate (the contract's keys, plus what each round measured).

    ``steps`` are rounds tried before the search (a whole-model option such
    as reduce_range); they count in ``rounds``.
    """
    return {
        "bar": bar.as_dict(),
        "before": {k: round(v, 6) for k, v in before.items()},
        "after": {k: round(v, 6) for k, v in outcome.metrics.items()},
        "met": outcome.met,
        "rounds": outcome.rounds + len(steps),
        "steps": list(steps),
        "signal": signal,
        "action": action,
        "kept_float": kept_nodes(outcome.kept, module_of, op_of),
        "tried": outcome.tried,
    }
