"""Weight-only rewrites: store a weight in int8 or int4 and dequantize it in the graph (float compute).

The forms onnxruntime runs for weights its quantizers leave float ("folded":
int codes -> Cast -> Mul by the scales, which onnxruntime constant-folds at
load, so the op runs at FP32 speed; see ``_replace_with_dq`` for why not
DequantizeLinear):

| op | int8 | int4 |
|---|---|---|
| Conv, ConvTranspose | folded, per output channel | folded, per output channel or in blocks along input channels |
| MatMul, Gemm (const B) | folded, per output column | (MatMulNBits, in ``int4.py``) |
| GRU, LSTM, RNN (W, R) | folded, per gate row | folded, per gate row |
| Gather (embedding tables) | GatherBlockQuantized bits=8 | GatherBlockQuantized int4 |
| other constant tables (sliced or added: position embeddings) | folded, per row | folded, per row |

Quantization is symmetric round-to-nearest with positive scales (no zero
points); at 4 bits each group uses all 16 codes and, when it has enough
weights or an importance to weigh them by, picks the clipping of its range
with the least (weighted) squared error. Biases and normalisation vectors
stay float. Every function edits the model it is given
and returns the names of the nodes it changed. Needs ``onnx`` and numpy only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.backends.onnx.graph import RECURRENT, drop_unused_initializers, initializers

# Embedding tables smaller than this stay float: the lookup of a handful of rows costs nothing either way.
MIN_GATHER_ELEMENTS = 1024
# Block along the embedding width for int8 tables (int4 picks its own): one fp32 scale per 128 codes.
GATHER_BLOCK = 128
MS_DOMAIN = "com.microsoft"


# 4-bit groups try these divisors of their largest magnitude as the scale (codes clipped to [-8, 7]):
# 7 keeps every value in range, larger ones trade clipping the extremes for finer steps.
INT4_DIVISORS = (7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 11.0)
# Groups smaller than this keep their whole range (divisor 7) unless weighted by importance. On the
# tiny test CNN, fitting 9- to 72-weight conv groups lost 1-3 dB of output SQNR against keeping the range.
MIN_CLIP_GROUP = 64


def symmetric(values: np.ndarray, bits: int, axis: int | None, block: int | None = None,
              importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization of ``values``: (int8 array holding the codes, float32 scales > 0).

    ``axis`` None is per tensor; otherwise one scale per index of ``axis``
    (scales 1-D), or with ``block`` one per ``block`` consecutive elements
    along ``axis`` (scales keep the rank, ``ceil(dim / block)`` along
    ``axis``: the opset-21 blocked DequantizeLinear layout). 8-bit codes lie
    in [-127, 127] (scale = largest magnitude / 127). 4-bit codes use all of
    [-8, 7] and each group picks, from ``INT4_DIVISORS``, the scale with the
    least squared error: one outlier then no longer costs the whole group
    its resolution. ``importance`` (blocked only: one weight per index of
    ``axis``, e.g. the mean square of the input activation each weight
    multiplies) weights that error, so the search protects the weights that
    meet large activations.
    """
    x = values.astype(np.float32)
    if axis is None:
        groups = x.reshape(1, -1)
    else:
        axis %= x.ndim
        moved = np.moveaxis(x, axis, -1)  # [..., D]
        dim = moved.shape[-1]
        if block:
            pad = (-dim) % block
            padded = np.concatenate([moved, np.zeros((*moved.shape[:-1], pad), np.float32)], axis=-1) if pad else moved
            groups = padded.reshape(-1, block)
        else:
            groups = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    absmax = np.abs(groups).max(axis=1)
    weight = None
    if importance is not None and axis is not None and block:
        imp = np.asarray(importance, np.float64).reshape(-1)
        imp = np.concatenate([imp, np.zeros((-len(imp)) % block)])  # [D padded]
        # groups are [..., D/block, block] flattened: the same importance row repeats for every leading index.
        weight = np.tile(imp.reshape(-1, block), (len(groups) // (len(imp) // block), 1))
    if bits == 8:
        low, high = -127, 127
        best = np.where(absmax == 0, 1.0, absmax / 127).astype(np.float32)
    else:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        best = np.ones(len(groups), np.float32)
        best_error = np.full(len(groups), np.inf)
        # A small group (a 1-channel 3x3 filter) is no sample to fit a clipping to: keep its range,
        # unless activation importance says which of its weights matter.
        fit = groups.shape[1] >= MIN_CLIP_GROUP or weight is not None
        divisors = INT4_DIVISORS if bits == 4 and fit else (float(high),)
        for divisor in divisors:
            scale = np.where(absmax == 0, 1.0, absmax / divisor).astype(np.float32)
            error = np.square(np.clip(np.round(groups / scale[:, None]), low, high) * scale[:, None] - groups)
            error = (error * weight).sum(axis=1) if weight is not None else error.sum(axis=1)
            better = error < best_error
            best_error = np.where(better, error, best_error)
            best = np.where(better, scale, best)
    codes = np.clip(np.round(groups / best[:, None]), low, high).astype(np.int8)
    if axis is None:
        return codes.reshape(x.shape), best.reshape(())
    if block:
        padded_shape = (*moved.shape[:-1], moved.shape[-1] + (-moved.shape[-1]) % block)
        codes = codes.reshape(padded_shape)[..., :dim]
        scales = best.reshape(*padded_shape[:-1], padded_shape[-1] // block)
        return np.ascontiguousarray(np.moveaxis(codes, -1, axis)), np.ascontiguousarray(np.moveaxis(scales, -1, axis))
    moved_shape = np.moveaxis(x, axis, 0).shape
    return np.ascontiguousarray(np.moveaxis(codes.reshape(moved_shape), 0, axis)), best


_MEMO: dict[tuple, tuple[np.ndarray, np.ndarray]] | None = None


@contextlib.contextmanager
def memo() -> Iterator[None]:
    """Reuse the codes of a weight quantized before (same weight, bits, axis, block) inside this block.

    A mixed-precision search rebuilds the model once per round with most
    layers unchanged; the scale search is the slow part of a rebuild.
    """
    global _MEMO
    outer = _MEMO
    _MEMO = {} if outer is None else outer
    try:
        yield
    finally:
        _MEMO = outer


def _codes(key: tuple, values: Callable[[], np.ndarray], bits: int, axis: int | None, block: int | None = None,
           importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``symmetric(values(), ...)``, memoised under ``key`` inside ``memo()``."""
    full_key = (*key, bits, axis, block)
    if _MEMO is not None and full_key in _MEMO:
        return _MEMO[full_key]
    result = symmetric(values(), bits, axis, block, importance)
    if _MEMO is not None:
        _MEMO[full_key] = result
    return result


def dequantized(codes: np.ndarray, scales: np.ndarray, axis: int | None, block: int | None = None) -> np.ndarray:
    """The float weights ``codes`` stand for (the inverse of ``symmetric``), for error estimates."""
    if axis is None:
        return codes.astype(np.float32) * scales
    axis %= codes.ndim
    if block:
        expanded = np.take(np.repeat(scales, block, axis=axis), np.arange(codes.shape[axis]), axis=axis)
    else:
        shape = [1] * codes.ndim
        shape[axis] = -1
        expanded = scales.reshape(shape)
    return codes.astype(np.float32) * expanded


def int_tensor(codes: np.ndarray, bits: int, name: str) -> TensorProto:
    """An INT8 or INT4 initializer (int4 packed two per byte, low nibble first, as ONNX stores it)."""
    if bits == 8:
        return numpy_helper.from_array(codes.astype(np.int8), name)
    flat = codes.astype(np.int8).ravel()
    if len(flat) % 2:
        flat = np.append(flat, np.int8(0))
    packed = ((flat[0::2] & 0x0F) | ((flat[1::2] & 0x0F) << 4)).astype(np.uint8)
    return helper.make_tensor(name, TensorProto.INT4, codes.shape, packed.tobytes(), raw=True)


def _replace_with_dq(model: onnx.ModelProto, node: onnx.NodeProto, index: int, bits: int, axis: int,
                     block: int | None, nodes_before: list[onnx.NodeProto]) -> None:
    """Store input ``index`` of ``node`` (a float initializer) as int codes and scales, dequantized by Cast and Mul.

    Cast -> Mul (-> Reshape for blocks) on initializers is what onnxruntime's
    constant folding evaluates at load, so the op sees a constant float
    weight and prepacks it: same speed as FP32, a 4x/8x smaller file.
    DequantizeLinear would be the standard form, but onnxruntime never folds
    it (it keeps QDQ units for execution providers) and dequantizes on every
    run: measured on the zoo GRU, 1.28x FP32 latency at int8 and 3.06x at int4,
    against 0.98x / 0.97x with Cast -> Mul. Blocks need ``block`` to divide
    the axis (the codes are stored with that axis split in two).
    """
    name = node.input[index]
    tensor = initializers(model)[name]
    codes, scales = _codes((name,), lambda: numpy_helper.to_array(tensor), bits, axis, block)
    base = f"{name}_{node.name}_w{bits}"
    shape = list(codes.shape)
    if block:
        split = shape[:axis] + [shape[axis] // block, block] + shape[axis + 1 :]
        codes = codes.reshape(split)
        scales = scales.reshape(shape[:axis] + [shape[axis] // block, 1] + shape[axis + 1 :])
    else:
        scales = scales.reshape([-1 if i == axis else 1 for i in range(len(shape))])
    model.graph.initializer.extend([int_tensor(codes, bits, f"{base}_q"),
                                    numpy_helper.from_array(scales.astype(np.float32), f"{base}_scale")])
    nodes_before.append(helper.make_node("Cast", [f"{base}_q"], [f"{base}_cast"], to=TensorProto.FLOAT,
                                         name=f"{node.name}_w{index}_cast"))
    scaled = f"{base}_dq" if not block else f"{base}_blocks"
    nodes_before.append(helper.make_node("Mul", [f"{base}_cast", f"{base}_scale"], [scaled],
                                         name=f"{node.name}_w{index}_dequantize"))
    if block:
        model.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), f"{base}_shape"))
        nodes_before.append(helper.make_node("Reshape", [scaled, f"{base}_shape"], [f"{base}_dq"],
                                             name=f"{node.name}_w{index}_unblock"))
    node.input[index] = f"{base}_dq"


def _float_initializer(model_inits: dict[str, TensorProto], name: str, min_rank: int = 2) -> bool:
    tensor = model_inits.get(name)
    return tensor is not None and tensor.data_type == TensorProto.FLOAT and len(tensor.dims) >= min_rank


def _rewrite(model: onnx.ModelProto, choose) -> list[str]:  # noqa: ANN001 - a local callback
    """Walk the graph; ``choose(node, inits)`` returns [(input index, bits, axis, block)] to store quantized."""
    inits = initializers(model)
    nodes: list[onnx.NodeProto] = []
    changed: list[str] = []
    for node in model.graph.node:
        plan = choose(node, inits)
        before: list[onnx.NodeProto] = []
        for index, bits, axis, block in plan:
            _replace_with_dq(model, node, index, bits, axis, block, before)
        if before:
            changed.append(node.name)
        nodes.extend(before)
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    drop_unused_initializers(model)
    return changed


def conv_blockable(weight: TensorProto, block: int) -> bool:
    """Whether a conv weight's input channels split into two or more whole blocks."""
    return len(weight.dims) >= 3 and weight.dims[1] >= 2 * block and weight.dims[1] % block == 0


def quantize_convs(model: onnx.ModelProto, bits: int, only: Iterable[str] | None = None,
                   blocked: Iterable[str] = (), block: int = 32) -> list[str]:
    """Conv / ConvTranspose weights in int8 or int4, folded; returns the nodes changed.

    Conv weights are [O, I/g, k...] (per output channel: axis 0); ConvTranspose
    weights are [I, O/g, k...] (axis 1). Nodes in ``blocked`` get blocks of
    ``block`` input channels instead (Conv only, when it has two blocks or more).
    """
    only_set = set(only) if only is not None else None
    blocked_set = set(blocked)

    def choose(node: onnx.NodeProto, inits: dict[str, TensorProto]) -> list[tuple[int, int, int, int | None]]:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
            return []
        if (only_set is not None and node.name not in only_set) or not _float_initializer(inits, node.input[1], 3):
            return []
        if node.op_type == "Conv" and node.name in blocked_set and conv_blockable(inits[node.input[1]], block):
            return [(1, bits, 1, block)]
        return [(1, bits, 0 if node.op_type == "Conv" else 1, None)]

    return _rewrite(model, choose)


def quantize_recurrent(model: onnx.ModelProto, bits: int, only: Iterable[str] | None = None,
                       block: int | None = None) -> list[str]:
    """GRU / LSTM / RNN weights W and R ([directions, gates*H, in]) in int8/int4, folded.

    One scale per gate row (axis 1), or blocks of ``block`` along the input
    (axis 2) when given and the input has two blocks or more. onnxruntime's
    dynamic quantizer handles LSTM only (DynamicQuantizeLSTM) and nothing
    handles GRU; this form works for all three. Weights must be initializers
    (``graph.fold_weight_chains`` first). Bias B stays float.
    """
    only_set = set(only) if only is not None else None

    def choose(node: onnx.NodeProto, inits: dict[str, TensorProto]) -> list[tuple[int, int, int, int | None]]:
        if node.op_type not in RECURRENT or (only_set is not None and node.name not in only_set):
            return []
        plan = []
        for index in (1, 2):
            if len(node.input) > index and _float_initializer(inits, node.input[index], 3):
                width = inits[node.input[index]].dims[2]
                blocks = block and width >= 2 * block and width % block == 0
                plan.append((index, bits, 2, block) if blocks else (index, bits, 1, None))
        return plan

    return _rewrite(model, choose)


def quantize_matmuls(model: onnx.ModelProto, bits: int, only: Iterable[str] | None = None) -> list[str]:
    """MatMul / Gemm constant weights in int8, folded, one scale per output channel.

    MatMul B is [K, N] (per column: axis 1, or the last axis of an N-D B);
    Gemm B is [K, N], or [N, K] with transB (axis 0).
    """
    only_set = set(only) if only is not None else None

    def choose(node: onnx.NodeProto, inits: dict[str, TensorProto]) -> list[tuple[int, int, int, int | None]]:
        if node.op_type not in ("MatMul", "Gemm") or (only_set is not None and node.name not in only_set):
            return []
        if len(node.input) < 2 or not _float_initializer(inits, node.input[1]):
            return []
        rank = len(inits[node.input[1]].dims)
        if node.op_type == "Gemm":
            trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
            return [(1, bits, 0 if trans_b else 1, None)]
        return [(1, bits, rank - 1, None)]

    return _rewrite(model, choose)


def embedding_gathers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Gather nodes that look up rows of a float table (an embedding): constant 2-D data, axis 0."""
    inits = initializers(model)
    found = []
    for node in model.graph.node:
        if node.op_type != "Gather" or not _float_initializer(inits, node.input[0]):
            continue
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        if len(inits[node.input[0]].dims) == 2 and axis == 0 and np.prod(inits[node.input[0]].dims) >= MIN_GATHER_ELEMENTS:
            found.append(node)
    return found


def quantize_gathers(model: onnx.ModelProto, bits: int, block: int, only: Iterable[str] | None = None) -> list[str]:
    """Embedding tables as GatherBlockQuantized (com.microsoft): int4, or uint8 codes with bits=8.

    Blocks of ``block`` (a power of two, at least 16) run along the embedding
    width (quantize_axis 1), so each looked-up row carries its own scales.
    The file then stores ~bits/32 of the FP32 table (plus one scale per
    block), and the lookup dequantizes only the rows it reads.
    """
    only_set = set(only) if only is not None else None
    targets = {n.name for n in embedding_gathers(model) if only_set is None or n.name in only_set}
    if not targets:
        return []
    inits = initializers(model)
    nodes = []
    for node in model.graph.node:
        if node.name not in targets:
            nodes.append(node)
            continue
        table = inits[node.input[0]]
        codes, scales = _codes((node.input[0],), lambda t=table: numpy_helper.to_array(t), bits, 1, block)
        base = f"{node.input[0]}_{node.name}_g{bits}"
        if bits == 8:
            data = numpy_helper.from_array((codes.astype(np.int16) + 128).astype(np.uint8), f"{base}_q")  # zero point 128
        else:
            data = int_tensor(codes, 4, f"{base}_q")
        model.graph.initializer.extend([data, numpy_helper.from_array(scales, f"{base}_scale")])
        nodes.append(helper.make_node(
            "GatherBlockQuantized", [data.name, node.input[1], f"{base}_scale"], list(node.output),
            name=f"{node.name}_Q{bits}", domain=MS_DOMAIN, gather_axis=0, quantize_axis=1, block_size=block, bits=bits,
        ))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    drop_unused_initializers(model)
    return sorted(targets)


def matmul_nbits_weight(matrix: np.ndarray, bits: int, block: int, importance: np.ndarray | None = None,
                        key: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    """A [K, N] weight as MatMulNBits stores it: (uint8 B [N, K/block, block*bits/8], float32 scales [N * blocks]).

    Blocks of ``block`` run along K for each output column; codes are stored
    unsigned with the op's default zero point (8 for 4 bits, 128 for 8),
    4-bit codes two per byte, low nibble first.
    """
    k, n = matrix.shape
    codes, scales = _codes(key, lambda: matrix, bits, 0, block, importance) if key else \
        symmetric(matrix, bits, 0, block, importance)  # [K, N], [K/block, N]
    blocks = scales.shape[0]
    offset = 2 ** (bits - 1)
    unsigned = np.zeros((n, blocks * block), np.uint8)
    unsigned[:, :k] = (codes.T.astype(np.int16) + offset).astype(np.uint8)
    unsigned[:, k:] = offset  # padding decodes to 0
    unsigned = unsigned.reshape(n, blocks, block)
    if bits == 4:
        unsigned = (unsigned[..., 0::2] & 0x0F) | ((unsigned[..., 1::2] & 0x0F) << 4)
    return np.ascontiguousarray(unsigned, dtype=np.uint8), np.ascontiguousarray(scales.T.reshape(-1), dtype=np.float32)


def matmul_weights(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMul nodes whose B is a float initializer of rank 2 (or higher with leading 1s)."""
    inits = initializers(model)
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or not _float_initializer(inits, node.input[1]):
            continue
        dims = list(inits[node.input[1]].dims)
        if all(d == 1 for d in dims[:-2]) and dims[-2] >= 16:
            found.append(node)
    return found


def quantize_matmuls_nbits(model: onnx.ModelProto, bits_of: dict[str, int], block: int,
                           accuracy_level: int = 4, importance: dict[str, np.ndarray] | None = None) -> list[str]:
    """Replace the MatMuls named in ``bits_of`` by MatMulNBits (com.microsoft) at the given bits (4 or 8).

    The same op onnxruntime's MatMulNBitsQuantizer writes, with this module's
    per-block scale search. ``accuracy_level`` 4 lets the kernel quantize
    activations to int8 per block (measured faster than float compute on
    x86 at the same fidelity). ``importance`` maps a node to the mean square
    of each of its K inputs (see ``symmetric``).
    """
    inits = initializers(model)
    nodes: list[onnx.NodeProto] = []
    changed = []
    for node in model.graph.node:
        bits = bits_of.get(node.name)
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if bits is None or weight is None or not _float_initializer(inits, node.input[1]):
            nodes.append(node)
            continue
        matrix = numpy_helper.to_array(weight)
        matrix = matrix.reshape(matrix.shape[-2], matrix.shape[-1])
        packed, scales = matmul_nbits_weight(matrix, bits, block, (importance or {}).get(node.name),
                                             key=(node.input[1], node.name))
        base = f"{node.input[1]}_{node.name}_nb{bits}"
        model.graph.initializer.extend([numpy_helper.from_array(packed, f"{base}_q"),
                                        numpy_helper.from_array(scales, f"{base}_scale")])
        nodes.append(helper.make_node(
            "MatMulNBits", [node.input[0], f"{base}_q", f"{base}_scale"], list(node.output), name=f"{node.name}_Q{bits}",
            domain=MS_DOMAIN, K=matrix.shape[0], N=matrix.shape[1], bits=bits, block_size=block,
            accuracy_level=accuracy_level,
        ))
        changed.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if changed and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    drop_unused_initializers(model)
    return changed


# Ops a constant table may feed for ``quantize_tables`` to store it quantized (elementwise use, slicing,
# concatenation): the dequantized constant then folds at load like any other.
TABLE_CONSUMERS = frozenset({"Slice", "Add", "Sub", "Mul", "Concat", "Expand", "Where", "Tile"})


def quantize_tables(model: onnx.ModelProto, bits: int, min_elements: int = MIN_GATHER_ELEMENTS) -> list[str]:
    """Constant float tables only read elementwise or sliced (position embeddings, learned queries) in int codes.

    Such a table is a weight no quantizer looks at (a BERT whose position
    embeddings are sliced rather than looked up: 0.2M floats, 0.9 % of
    MiniLM). Stored folded, one scale per row of its first non-unit axis.
    Returns the names of the tables quantized.
    """
    inits = initializers(model)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    done = []
    for name, tensor in list(inits.items()):
        users = readers.get(name, [])
        if (tensor.data_type != TensorProto.FLOAT or len(tensor.dims) < 2 or int(np.prod(tensor.dims)) < min_elements
                or not users or name in outputs or any(u.op_type not in TABLE_CONSUMERS for u in users)):
            continue
        values = numpy_helper.to_array(tensor)
        axis = next((i for i, d in enumerate(values.shape) if d > 1), 0)
        codes, scales = _codes((name,), lambda v=values: v, bits, axis)
        scales = scales.reshape([-1 if i == axis else 1 for i in range(values.ndim)])
        base = f"{name}_t{bits}"
        model.graph.initializer.extend([int_tensor(codes, bits, f"{base}_q"),
                                        numpy_helper.from_array(scales.astype(np.float32), f"{base}_scale")])
        cast = helper.make_node("Cast", [f"{base}_q"], [f"{base}_cast"], to=TensorProto.FLOAT, name=f"{base}_cast")
        mul = helper.make_node("Mul", [f"{base}_cast", f"{base}_scale"], [f"{base}_dq"], name=f"{base}_dequantize")
        for user in users:
            user.input[:] = [f"{base}_dq" if i == name else i for i in user.input]
        model.graph.node.insert(0, mul)
        model.graph.node.insert(0, cast)
        done.append(name)
    if done:
        drop_unused_initializers(model)
    return done
