"""Reductions (``reduce_*``): ``axes`` absent means every axis; ``keep_dims`` keeps them as size 1."""

from __future__ import annotations

import numpy as np

from edgekit.backends.coreml.emulator.ops.registry import register


def _axes(ctx, x):  # type: ignore[no-untyped-def]
    axes = ctx.ints("axes", None)
    return tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)


def _logsumexp(x, axis, keepdims):  # type: ignore[no-untyped-def]
    peak = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return out if keepdims else np.squeeze(out, axis=axis)


_REDUCTIONS = {
    "reduce_sum": lambda x, a, k: np.sum(x, axis=a, keepdims=k),
    "reduce_mean": lambda x, a, k: np.mean(x, axis=a, keepdims=k),
    "reduce_max": lambda x, a, k: np.max(x, axis=a, keepdims=k),
    "reduce_min": lambda x, a, k: np.min(x, axis=a, keepdims=k),
    "reduce_prod": lambda x, a, k: np.prod(x, axis=a, keepdims=k),
    "reduce_sum_square": lambda x, a, k: np.sum(x * x, axis=a, keepdims=k),
    "reduce_l1_norm": lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k),
    "reduce_l2_norm": lambda x, a, k: np.sqrt(np.sum(x * x, axis=a, keepdims=k)),
    "reduce_log_sum": lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)),
    "reduce_log_sum_exp": _logsumexp,
}


def _reduction(fn):  # type: ignore[no-untyped-def]
    def run(ctx):  # type: ignore[no-untyped-def]
        x = ctx.x()
        return fn(x, _axes(ctx, x), bool(ctx.scalar("keep_dims", False)))

    return run


for _name, _fn in _REDUCTIONS.items():
    register(_name)(_reduction(_fn))


def _arg(fn):  # type: ignore[no-untyped-def]
    def run(ctx):  # type: ignore[no-untyped-def]
        x = ctx.x()
        axis = int(ctx.scalar("axis", -1))
        out = fn(x, axis=axis)
        return np.expand_dims(out, axis) if ctx.scalar("keep_dims", False) else out

    return run


register("reduce_argmax")(_arg(np.argmax))
register("reduce_argmin")(_arg(np.argmin))
