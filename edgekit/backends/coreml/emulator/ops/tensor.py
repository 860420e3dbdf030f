"""Tensor layout ops: reshape, transpose, concat, split, slicing, gather, pad, cast, shape math."""

from __future__ import annotations

import numpy as np

from edgekit.backends.coreml.emulator.dtypes import CAST_NAMES, numpy_dtype
from edgekit.backends.coreml.emulator.ops.registry import register


@register("reshape")
def reshape(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    shape = ctx.ints("shape")
    # A 0 copies the input dim it lines up with from the right (iOS 17 rule; for
    # len(shape) == rank it is the iOS 15 "same index" rule), or 1 if none.
    offset = x.ndim - len(shape)
    resolved = [(x.shape[i + offset] if 0 <= i + offset < x.ndim else 1) if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(resolved)


@register("reshape_like")
def reshape_like(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    refs = ctx.many("ref_tensors")
    begins, ends = ctx.ints("begins"), ctx.ints("ends")
    end_masks = [bool(b) for b in np.asarray(ctx.raw("end_masks")).reshape(-1)]
    shape: list[int] = []
    for ref, b, e, mask in zip(refs, begins, ends, end_masks):
        shape += list(ref.shape[b:] if mask else ref.shape[b:e])
    return x.reshape(shape)


@register("transpose")
def transpose(ctx):  # type: ignore[no-untyped-def]
    return np.transpose(ctx.x(), ctx.ints("perm"))


@register("concat")
def concat(ctx):  # type: ignore[no-untyped-def]
    values = [np.asarray(v) for v in ctx.many("values")]
    axis = int(ctx.scalar("axis"))
    if ctx.scalar("interleave", False):
        # interleave: take one slice from each input in turn along the axis
        stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate([v.reshape(1) if v.ndim == 0 else v for v in values], axis=axis)


@register("stack")
def stack(ctx):  # type: ignore[no-untyped-def]
    return np.stack(ctx.many("values"), axis=int(ctx.scalar("axis")))


@register("split")
def split(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    axis = int(ctx.scalar("axis"))
    sizes = ctx.ints("split_sizes", None)
    if sizes is None:
        count = int(ctx.scalar("num_splits", len(ctx.op.outputs)))
        return tuple(np.split(x, count, axis=axis))
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@register("squeeze")
def squeeze(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    axes = ctx.ints("axes", None)
    return np.squeeze(x, axis=tuple(axes)) if axes else np.squeeze(x)


@register("expand_dims")
def expand_dims(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    axes = ctx.ints("axes")
    out_rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(a % out_rank for a in axes)))


@register("flatten2d")
def flatten2d(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    axis = int(ctx.scalar("axis", 1)) % max(x.ndim, 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@register("slice_by_index")
def slice_by_index(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    rank = x.ndim
    begin, end = ctx.ints("begin"), ctx.ints("end")
    stride = ctx.ints("stride", None) or [1] * rank
    flags = {}
    for name in ("begin_mask", "end_mask", "squeeze_mask"):
        raw = ctx.raw(name, None)
        flags[name] = [False] * rank if raw is None else [bool(v) for v in np.asarray(raw).reshape(-1)]
    index = []
    for i in range(rank):
        if flags["squeeze_mask"][i]:
            index.append(begin[i])  # an integer index drops the dim
            continue
        b = None if flags["begin_mask"][i] else begin[i]
        e = None if flags["end_mask"][i] else end[i]
        index.append(slice(b, e, stride[i]))
    return np.asarray(x[tuple(index)])


@register("slice_by_size")
def slice_by_size(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    begin, size = ctx.ints("begin"), ctx.ints("size")
    index = []
    for i in range(x.ndim):
        b = begin[i] % x.shape[i] if begin[i] < 0 else begin[i]
        index.append(slice(b, None if size[i] == -1 else b + size[i]))
    return x[tuple(index)]


@register("gather")
def gather(ctx):  # type: ignore[no-untyped-def]
    x, indices = ctx.x(), np.asarray(ctx.x("indices")).astype(np.int64)
    axis = int(ctx.scalar("axis", 0)) % x.ndim
    batch_dims = int(ctx.scalar("batch_dims", 0))
    indices = np.where(indices < 0, indices + x.shape[axis], indices)
    if batch_dims == 0:
        return np.take(x, indices, axis=axis)
    # batch_dims > 0: gather independently for each leading batch index
    batch = x.shape[:batch_dims]
    flat_x = x.reshape((-1,) + x.shape[batch_dims:])
    flat_i = indices.reshape((-1,) + indices.shape[batch_dims:])
    parts = [np.take(flat_x[b], flat_i[b], axis=axis - batch_dims) for b in range(flat_x.shape[0])]
    return np.stack(parts).reshape(batch + parts[0].shape)


@register("gather_along_axis")
def gather_along_axis(ctx):  # type: ignore[no-untyped-def]
    x, indices = ctx.x(), np.asarray(ctx.x("indices")).astype(np.int64)
    axis = int(ctx.scalar("axis", 0)) % x.ndim
    indices = np.where(indices < 0, indices + x.shape[axis], indices)
    return np.take_along_axis(x, indices, axis=axis)


@register("gather_nd")
def gather_nd(ctx):  # type: ignore[no-untyped-def]
    x, indices = ctx.x(), np.asarray(ctx.x("indices")).astype(np.int64)
    batch_dims = int(ctx.scalar("batch_dims", 0))
    if batch_dims:
        raise ValueError("gather_nd with batch_dims > 0 is not supported")
    depth = indices.shape[-1]
    return x[tuple(np.moveaxis(indices, -1, 0)[i] for i in range(depth))]


@register("pad")
def pad(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    pads = ctx.ints("pad")
    mode = ctx.scalar("mode", "constant")
    count = len(pads) // 2  # pads apply to the last `count` dims
    widths = [(0, 0)] * (x.ndim - count) + [(pads[2 * i], pads[2 * i + 1]) for i in range(count)]
    if mode == "constant":
        return np.pad(x, widths, constant_values=ctx.scalar("constant_val", 0.0))
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    raise ValueError(f"unknown pad mode {mode}")


@register("tile")
def tile(ctx):  # type: ignore[no-untyped-def]
    return np.tile(ctx.x(), ctx.ints("reps"))


@register("reverse")
def reverse(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    axes = ctx.ints("axes", None)
    return np.flip(x, axis=tuple(axes) if axes else None)


@register("cast")
def cast(ctx):  # type: ignore[no-untyped-def]
    x = ctx.raw("x")
    target = numpy_dtype(CAST_NAMES.get(str(ctx.scalar("dtype")), str(ctx.scalar("dtype"))))
    with np.errstate(over="ignore", invalid="ignore"):  # fp32 → fp16 overflow gives inf, as on device
        if target.kind in "iu" and np.asarray(x).dtype.kind == "f":
            return np.trunc(x).astype(target)  # MIL casts float → int by truncation
        if target == np.float16:
            return np.asarray(x, dtype=np.float32)  # rounded to fp16 by the interpreter (declared output dtype)
        return np.asarray(x).astype(target)


@register("shape")
def shape(ctx):  # type: ignore[no-untyped-def]
    return np.asarray(np.shape(ctx.raw("x")), dtype=np.int32)


@register("fill")
def fill(ctx):  # type: ignore[no-untyped-def]
    return np.full(ctx.ints("shape"), ctx.scalar("value", 0.0), dtype=np.float32)


@register("fill_like")
def fill_like(ctx):  # type: ignore[no-untyped-def]
    return np.full(np.shape(ctx.raw("ref_tensor")), ctx.scalar("value", 0.0), dtype=np.float32)


@register("range_1d")
def range_1d(ctx):  # type: ignore[no-untyped-def]
    return np.arange(ctx.scalar("start"), ctx.scalar("end"), ctx.scalar("step"))


@register("cumsum")
def cumsum(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    axis = int(ctx.scalar("axis", 0))
    if ctx.scalar("reverse", False):
        x = np.flip(x, axis=axis)
    out = np.cumsum(x, axis=axis)
    if ctx.scalar("exclusive", False):
        out = out - x
    return np.flip(out, axis=axis) if ctx.scalar("reverse", False) else out


@register("band_part")
def band_part(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    lower, upper = int(ctx.scalar("lower", -1)), int(ctx.scalar("upper", -1))
    rows, cols = np.indices(x.shape[-2:])
    keep = np.ones(x.shape[-2:], dtype=bool)
    if lower >= 0:
        keep &= rows - cols <= lower
    if upper >= 0:
        keep &= cols - rows <= upper
    return np.where(keep, x, np.zeros((), dtype=x.dtype))


@register("one_hot")
def one_hot(ctx):  # type: ignore[no-untyped-def]
    indices = np.asarray(ctx.raw("indices")).astype(np.int64)
    depth = int(ctx.scalar("one_hot_vector_size"))
    axis = int(ctx.scalar("axis", -1))
    on, off = ctx.scalar("on_value", 1.0), ctx.scalar("off_value", 0.0)
    hot = np.arange(depth) == indices[..., None]
    return np.moveaxis(np.where(hot, on, off), -1, axis)


@register("pixel_shuffle")
def pixel_shuffle(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    r = int(ctx.scalar("upscale_factor"))
    n, c, h, w = x.shape
    return x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (r * r), h * r, w * r)


@register("pixel_unshuffle")
def pixel_unshuffle(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    r = int(ctx.scalar("downscale_factor"))
    n, c, h, w = x.shape
    return x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r)
