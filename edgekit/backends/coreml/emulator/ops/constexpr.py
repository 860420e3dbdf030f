"""``constexpr_*`` ops: weight decompression, evaluated once when a program loads.

Two generations exist and both are decoded:

- iOS 16/17: parameters are op *attributes*; ``constexpr_lut_to_dense`` and
  ``constexpr_sparse_to_dense`` take packed uint8 ``indices``/``mask`` bytes
  plus a uint32 ``shape``; ``constexpr_affine_dequantize`` is per-tensor or
  per-axis.
- iOS 18: parameters are op *inputs*; indices/masks are sub-byte tensors with
  their real shape; ``constexpr_blockwise_shift_scale`` is per-block;
  ``constexpr_lut_to_sparse`` and ``constexpr_sparse_blockwise_shift_scale``
  return ``(mask, nonzero_data)`` for a following ``constexpr_sparse_to_dense``.

The arithmetic (operand dtypes and order) mirrors the MIL reference
definitions, so decoded weights equal coremltools' own ``decompress`` bit for
bit, including FP16 rounding.
"""

from __future__ import annotations

import numpy as np

from edgekit.backends.coreml.emulator.dtypes import unpack_bits
from edgekit.backends.coreml.emulator.ops.registry import register


def _along_axis(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A scalar or vector parameter shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    param = np.asarray(param)
    if param.ndim == rank:
        return param
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * rank
    shape[axis % rank] = param.size
    return param.reshape(shape)


def _repeat_blocks(data: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    """Repeat each of the first len(target) dims of ``data`` so that they match ``target`` (block expansion)."""
    for axis, size in enumerate(target):
        if data.shape[axis] != size:
            data = np.repeat(data, size // data.shape[axis], axis=axis)
    return data


@register("constexpr_affine_dequantize")
def affine_dequantize(ctx):  # type: ignore[no-untyped-def]
    data = np.asarray(ctx.raw("quantized_data"))
    scale, zero_point = np.asarray(ctx.raw("scale")), np.asarray(ctx.raw("zero_point"))
    axis = int(ctx.scalar("axis", 0))
    out = data.astype(np.float32)
    out -= _along_axis(zero_point, data.ndim, axis).astype(np.float32)
    out *= _along_axis(scale, data.ndim, axis)
    return out.astype(scale.dtype)


@register("constexpr_cast")
def constexpr_cast(ctx):  # type: ignore[no-untyped-def]
    return np.asarray(ctx.raw("source_val")).astype(np.float32)


def _shift_scale(data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    """Blockwise ``scale * (data - offset)`` computed in the scale's dtype, as MIL defines it."""
    out = data.astype(scale.dtype)
    if offset is not None:
        out = out - _repeat_blocks(np.asarray(offset), data.shape)
    return _repeat_blocks(scale, data.shape) * out


@register("constexpr_blockwise_shift_scale")
def blockwise_shift_scale(ctx):  # type: ignore[no-untyped-def]
    offset = ctx.raw("offset", None)
    return _shift_scale(np.asarray(ctx.raw("data")), np.asarray(ctx.raw("scale")), offset)


def _lut_to_dense(indices: np.ndarray, lut: np.ndarray, vector_axis: int | None) -> np.ndarray:
    """iOS 18 LUT decode: per-block tables ``lut[*blocks, 2**nbits, vector_size]``."""
    palettes, vector_size = lut.shape[-2], lut.shape[-1]
    output_shape = list(indices.shape)
    if vector_size > 1:
        vector_axis = vector_axis % indices.ndim  # type: ignore[operator]
        indices = np.swapaxes(indices, -1, vector_axis)
        lut = np.swapaxes(lut, -3, vector_axis)
        output_shape = list(indices.shape)
        output_shape[-1] *= vector_size
    flat = indices.astype(np.int64).reshape(-1)
    tables = _repeat_blocks(lut, indices.shape).reshape(flat.size, palettes, vector_size)
    out = tables[np.arange(flat.size), flat].reshape(output_shape)
    return np.swapaxes(out, -1, vector_axis) if vector_size > 1 else out


@register("constexpr_lut_to_dense")
def lut_to_dense(ctx):  # type: ignore[no-untyped-def]
    indices, lut = np.asarray(ctx.raw("indices")), np.asarray(ctx.raw("lut"))
    if ctx.has("shape"):  # iOS 16: packed uint8 bytes, one flat table
        shape = ctx.ints("shape")
        nbits = int(np.log2(lut.size))
        unpacked = unpack_bits(indices, nbits, int(np.prod(shape)), signed=False)
        return lut[unpacked.astype(np.int64)].reshape(shape)
    vector_axis = ctx.scalar("vector_axis", None)
    return _lut_to_dense(indices, lut, None if vector_axis is None else int(vector_axis))


def _sparse_to_dense(nonzero: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, dtype=nonzero.dtype)
    out[mask != 0] = nonzero
    return out


@register("constexpr_sparse_to_dense")
def sparse_to_dense(ctx):  # type: ignore[no-untyped-def]
    nonzero, mask = np.asarray(ctx.raw("nonzero_data")), np.asarray(ctx.raw("mask"))
    if ctx.has("shape"):  # iOS 16: mask is packed bits in uint8 bytes
        shape = ctx.ints("shape")
        bits = unpack_bits(mask, 1, int(np.prod(shape)), signed=False).reshape(shape)
        return _sparse_to_dense(nonzero, bits)
    return _sparse_to_dense(nonzero, mask)


@register("constexpr_lut_to_sparse")
def lut_to_sparse(ctx):  # type: ignore[no-untyped-def]
    mask, nonzero_indices = np.asarray(ctx.raw("indices_mask")), np.asarray(ctx.raw("indices_nonzero_data"))
    lut = np.asarray(ctx.raw("lut"))
    vector_axis = ctx.scalar("vector_axis", None)
    vector_axis = None if vector_axis is None else int(vector_axis)
    dense = _lut_to_dense(_sparse_to_dense(nonzero_indices, mask), lut, vector_axis)
    out_mask = mask
    if vector_axis is not None and lut.shape[-1] > 1:
        out_mask = np.repeat(mask, lut.shape[-1], axis=vector_axis)
    return out_mask, dense[out_mask != 0].reshape(-1)


@register("constexpr_sparse_blockwise_shift_scale")
def sparse_blockwise_shift_scale(ctx):  # type: ignore[no-untyped-def]
    mask, nonzero = np.asarray(ctx.raw("data_mask")), np.asarray(ctx.raw("nonzero_data"))
    scale, offset = np.asarray(ctx.raw("scale")), ctx.raw("offset", None)
    dense = _shift_scale(_sparse_to_dense(nonzero, mask), scale, offset)
    return mask, dense[mask != 0].reshape(-1)


@register("const")
def const(ctx):  # type: ignore[no-untyped-def]
    return ctx.raw("val")
