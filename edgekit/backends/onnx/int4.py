"""ONNX INT4: every weight-bearing op in 4 bits, with layers raised to int8 only where fidelity needs it.

| op | int4 form | raised (int8) form |
|---|---|---|
| MatMul, Gemm (rewritten to MatMul) | MatMulNBits bits=4, blocks of 32 along K, accuracy_level 4, activation-weighted scales | int8 per column, folded (``weights.py``) |
| Gather of an embedding table | GatherBlockQuantized int4, blocks of ``GATHER_BLOCK`` along the width | GatherBlockQuantized bits=8 |
| Conv, ConvTranspose | int4 per output channel, folded (``weights.py``); in blocks of 32 input channels where that gains >= ``BLOCKED_GAIN_DB`` of weight SQNR | int8 per channel, folded |
| GRU, LSTM, RNN (W, R) | int4 per gate row, folded; in blocks of 32 inputs under the same rule | int8 per gate row, folded |
| constant tables read elementwise / sliced | int4 per row, folded | (not raised) |

Layers with fewer than ``MIN_INT4_WEIGHTS`` weights are int8 from the start.

Everything but MatMulNBits and GatherBlockQuantized computes in float: the
file shrinks, compute does not change (onnxruntime CPU has no int4 conv);
the folded form is dequantized once when onnxruntime loads the model.

Mixed precision: the all-int4 model is measured on the calibration split
against the FP32 outputs; when it misses the bar, the layers are ranked by
the noise each adds per weight (``fallback.rank``: raising costs 4 bits a
weight, so a 30k-token table goes last) and the most damaging are raised to
int8 in geometrically growing sets (``fallback.search``) until the bar is
met. If no set meets it the all-int4 model stays: raising layers would cost
size and still fail. Layers are never kept float here.

Measured on all-MiniLM-L6-v2 (zoo, 128 held-out sentences): 0.148x the FP32
file, cosine 0.9706 to FP32 (bar 0.97), 1.0x FP32 latency, three layers
raised in four rounds; onnxruntime's MatMulNBitsQuantizer with Gather, by
hand: 0.165x, cosine 0.963. Before, the embedding stayed float: 0.59x.

Needs onnx, numpy and onnxruntime (for the search); no torch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.backends.onnx import fallback, weights
from edgekit.backends.onnx import graph as graphs
from edgekit.backends.onnx.quantize import gemm_to_matmul
from edgekit.fidelity import FidelityTarget

INT4_BLOCK = 32
# Layers with fewer weights stay int8 (as coremltools' weight_threshold, 2048, leaves them alone):
# 4 bits would save under 1 KB there, and small layers (a stem conv, 3x3 depthwise filters of
# 9 weights per scale) lose the most from them.
MIN_INT4_WEIGHTS = 2048
GATHER_BLOCK = 128  # measured on MiniLM: 64 -> 128 costs 0.0004 cosine and saves 3 % of the file
BLOCKED_GAIN_DB = 3.0
SIGNAL = ("relative noise power each int4 layer adds (its output's minus its worst float input's), "
          "FP32 vs the all-int4 model on {n} calibration samples")


@dataclass
class Layers:
    """The weight-bearing nodes of the prepared graph, by how they are quantized."""

    matmuls: list[str] = field(default_factory=list)
    gathers: list[str] = field(default_factory=list)
    convs: list[str] = field(default_factory=list)
    recurrent: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # convs / recurrent layers stored in blocks along their inputs
    small: list[str] = field(default_factory=list)  # under MIN_INT4_WEIGHTS: int8 from the start
    ops: dict[str, str] = field(default_factory=dict)

    def all(self) -> list[str]:
        return [*self.matmuls, *self.gathers, *self.convs, *self.recurrent]


def prepare(source: Path) -> tuple[onnx.ModelProto, list[str]]:
    """The FP32 model in the form int4 quantizes: Gemm as MatMul, recurrent weights folded into initializers.

    Returns the model and the Gemm nodes that could not be rewritten (they stay float).
    """
    model, gemm_left = gemm_to_matmul(onnx.load(str(source)))
    model, _ = graphs.fold_weight_chains(model)
    return model, gemm_left


def _sqnr_db(values: np.ndarray, approx: np.ndarray) -> float:
    noise = float(np.sum((approx - values) ** 2))
    return float(10 * np.log10(max(float(np.sum(values**2)), 1e-30) / noise)) if noise > 0 else float("inf")


def find_layers(model: onnx.ModelProto) -> Layers:
    """Every layer int4 applies to, and the convs whose weights are better stored in blocks.

    A conv (recurrent layer) is blocked when its input channels (inputs) split
    into two or more whole blocks and blocks gain ``BLOCKED_GAIN_DB`` or more
    of weight SQNR over one scale per output channel (gate row): a data-free
    test, per-channel scales lose when the inputs of one filter differ a lot
    in magnitude. Blocks cost one fp32 scale per 32 codes (+1 bit per weight).
    """
    inits = graphs.initializers(model)
    layers = Layers()
    for node in weights.matmul_weights(model):
        layers.matmuls.append(node.name)
    for node in weights.embedding_gathers(model):
        layers.gathers.append(node.name)
    for node in model.graph.node:
        weight = inits.get(node.input[1]) if len(node.input) > 1 else None
        floating = weight is not None and weight.data_type == onnx.TensorProto.FLOAT and len(weight.dims) >= 3
        if node.op_type in ("Conv", "ConvTranspose") and floating:
            layers.convs.append(node.name)
            if node.op_type == "Conv" and weights.conv_blockable(weight, INT4_BLOCK):
                values = numpy_helper.to_array(weight)
                per_channel = _sqnr_db(values, weights.dequantized(*weights.symmetric(values, 4, 0), 0))
                blocked = _sqnr_db(values, weights.dequantized(*weights.symmetric(values, 4, 1, INT4_BLOCK), 1, INT4_BLOCK))
                if blocked - per_channel >= BLOCKED_GAIN_DB:
                    layers.blocked.append(node.name)
        elif node.op_type in graphs.RECURRENT and floating:
            layers.recurrent.append(node.name)
            width = weight.dims[2]
            if width >= 2 * INT4_BLOCK and width % INT4_BLOCK == 0:
                values = numpy_helper.to_array(weight)
                per_row = _sqnr_db(values, weights.dequantized(*weights.symmetric(values, 4, 1), 1))
                blocked = _sqnr_db(values, weights.dequantized(*weights.symmetric(values, 4, 2, INT4_BLOCK), 2, INT4_BLOCK))
                if blocked - per_row >= BLOCKED_GAIN_DB:
                    layers.blocked.append(node.name)
    layers.ops = {n.name: n.op_type for n in model.graph.node if n.name in set(layers.all())}
    layers.small = [name for name, size in layer_sizes(model, layers).items() if size < MIN_INT4_WEIGHTS]
    return layers



def layer_sizes(model: onnx.ModelProto, layers: Layers) -> dict[str, int]:
    """Weight elements per layer (what raising it to int8 costs, in units of 4 bits)."""
    inits = graphs.initializers(model)
    sizes = {}
    for node in model.graph.node:
        if node.name in layers.ops:
            indices = (0,) if node.op_type == "Gather" else (1, 2) if node.op_type in graphs.RECURRENT else (1,)
            sizes[node.name] = sum(int(np.prod(inits[node.input[i]].dims)) for i in indices
                                   if i < len(node.input) and node.input[i] in inits)
    return sizes


def quantized(model: onnx.ModelProto, layers: Layers, raised: Sequence[str] = (),
              importance: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` with every layer in int4, except those in ``raised``, which go to int8.

    ``importance``: per MatMul, the mean square of its inputs (``fallback.input_energy``), which
    the block scale search weighs rounding errors with.
    """
    out = copy.deepcopy(model)
    up = set(raised) | set(layers.small)

    def bits(name: str) -> int:
        return 8 if name in up else 4

    weights.quantize_matmuls_nbits(out, {n: 4 for n in layers.matmuls if bits(n) == 4}, INT4_BLOCK, importance=importance)
    raised_matmuls = [n for n in layers.matmuls if bits(n) == 8]
    if raised_matmuls:  # folded int8 runs at FP32 speed; MatMulNBits bits=8 measured 1.35x FP32 on x86
        weights.quantize_matmuls(out, 8, only=raised_matmuls)
    for width in (4, 8):
        chosen = [n for n in layers.gathers if bits(n) == width]
        if chosen:
            weights.quantize_gathers(out, width, GATHER_BLOCK if width == 4 else weights.GATHER_BLOCK, only=chosen)
        chosen = [n for n in layers.convs if bits(n) == width]
        if chosen:
            weights.quantize_convs(out, width, only=chosen, blocked=layers.blocked if width == 4 else (), block=INT4_BLOCK)
        chosen = [n for n in layers.recurrent if bits(n) == width]
        if chosen:
            blocked = [n for n in chosen if n in layers.blocked] if width == 4 else []
            if blocked:
                weights.quantize_recurrent(out, width, only=blocked, block=INT4_BLOCK)
            weights.quantize_recurrent(out, width, only=[n for n in chosen if n not in blocked])
    weights.quantize_tables(out, 4)
    return out


def int4_weight_only(
    source: Path,
    destination: Path,
    calibration: dict[str, np.ndarray] | None = None,
    reference: Sequence[np.ndarray] = (),
    bar: FidelityTarget | None = None,
    fixed_batch: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write the int4 model of ``source`` to ``destination``; returns it and a record of what was done.

    Record keys: ``layers`` (count), ``gemm_left_float``, ``blocked_convs``,
    ``raised_to_int8``, ``metrics`` (calibration fidelity, when measured), and
    ``search`` (the fallback outcome, when the all-int4 model missed ``bar``).
    """
    with weights.memo():
        return _int4(source, destination, calibration, reference, bar, fixed_batch)


def _int4(source: Path, destination: Path, calibration: dict[str, np.ndarray] | None, reference: Sequence[np.ndarray],
          bar: FidelityTarget | None, fixed_batch: int | None) -> tuple[Path, dict[str, Any]]:
    model, gemm_left = prepare(source)
    layers = find_layers(model)
    record: dict[str, Any] = {"layers": len(layers.all()), "gemm_left_float": gemm_left,
                              "blocked_convs": layers.blocked, "small_layers_int8": layers.small, "raised_to_int8": []}
    importance = fallback.input_energy(model, layers.matmuls, calibration, fixed_batch) if calibration else None
    full = quantized(model, layers, importance=importance)
    if calibration is None or bar is None or not bar.required:
        onnx.save(full, str(destination))
        return destination, record
    if not reference:
        reference = fallback.run(model, calibration, fixed_batch)
    before = fallback.fidelity(full, calibration, reference, fixed_batch)
    record["metrics"] = before
    if bar.met_by(before) or not [n for n in layers.all() if n not in set(layers.small)]:
        onnx.save(full, str(destination))
        return destination, record
    # Raising a layer costs 4 bits per weight: rank by error per weight, so the search buys
    # the most fidelity per byte (a 30k-token embedding is raised only if nothing cheaper helps).
    sizes = layer_sizes(model, layers)
    searchable = [n for n in layers.all() if n not in set(layers.small)]
    suspects = sorted(fallback.rank(model, full, searchable, calibration, fixed_batch),
                      key=lambda s: -s.error / max(sizes.get(s.name, 1), 1))
    trials: list[Path] = []

    def trial(raised: list[str]) -> tuple[Path, dict[str, float]]:
        path = destination.with_name(f"{destination.stem}.trial{len(trials)}.onnx")
        onnx.save(quantized(model, layers, raised, importance), str(path))
        trials.append(path)
        return path, fallback.fidelity(path, calibration, reference, fixed_batch)

    outcome = fallback.search(suspects, trial, bar)
    if outcome.met and outcome.path is not None:
        outcome.path.replace(destination)
    else:  # raising layers that cannot reach the bar would only cost size
        onnx.save(full, str(destination))
        outcome = fallback.Outcome([], before, False, outcome.rounds, None, outcome.tried)
    for path in trials:
        path.unlink(missing_ok=True)
    record.update(raised_to_int8=fallback.members(outcome.kept), metrics=outcome.metrics,
                  search={"before": before, "outcome": outcome,
                          "signal": SIGNAL.format(n=min(fallback.SIGNAL_SAMPLES, len(next(iter(calibration.values())))))})
    return destination, record
