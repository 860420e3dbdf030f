"""Activation ops (MIL ``activation`` family) and softmax."""

from __future__ import annotations

import numpy as np

from edgekit.backends.coreml.emulator.ops.registry import register
from edgekit.backends.coreml.emulator.ops.special import erf


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)


def _channel(ctx, name: str, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A per-channel parameter (axis 1) broadcast against ``x``."""
    value = np.asarray(ctx.x(name), dtype=np.float32)
    if value.ndim == 1 and x.ndim >= 2:
        return value.reshape((1, -1) + (1,) * (x.ndim - 2))
    return value


@register("relu")
def relu(ctx):  # type: ignore[no-untyped-def]
    return np.maximum(ctx.x(), np.float32(0))


@register("relu6")
def relu6(ctx):  # type: ignore[no-untyped-def]
    return np.clip(ctx.x(), np.float32(0), np.float32(6))


@register("sigmoid")
def sigmoid(ctx):  # type: ignore[no-untyped-def]
    return _sigmoid(ctx.x())


@register("silu")
def silu(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    return x * _sigmoid(x)


@register("sigmoid_hard")
def sigmoid_hard(ctx):  # type: ignore[no-untyped-def]
    alpha, beta = np.float32(ctx.scalar("alpha", 0.2)), np.float32(ctx.scalar("beta", 0.5))
    return np.clip(alpha * ctx.x() + beta, np.float32(0), np.float32(1))


@register("gelu")
def gelu(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    mode = ctx.scalar("mode", "EXACT")
    if mode == "EXACT":
        return np.float32(0.5) * x * (np.float32(1) + erf(x / np.float32(np.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":
        inner = np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * x * x * x)
        return np.float32(0.5) * x * (np.float32(1) + np.tanh(inner))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(np.float32(1.702) * x)
    raise ValueError(f"unknown gelu mode {mode}")


@register("softplus")
def softplus(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


@register("softplus_parametric")
def softplus_parametric(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    alpha, beta = _channel(ctx, "alpha", x), _channel(ctx, "beta", x)
    z = beta * x
    return alpha * (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))))


@register("softsign")
def softsign(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    return x / (np.float32(1) + np.abs(x))


@register("leaky_relu")
def leaky_relu(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    return np.where(x >= 0, x, np.float32(ctx.scalar("alpha", 0.01)) * x)


@register("elu")
def elu(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, np.float32(ctx.scalar("alpha", 1.0)) * np.expm1(np.minimum(x, 0)))


@register("prelu")
def prelu(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    return np.where(x >= 0, x, _channel(ctx, "alpha", x) * x)


@register("clamped_relu")
def clamped_relu(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    alpha, beta = np.float32(ctx.scalar("alpha")), np.float32(ctx.scalar("beta"))
    return np.minimum(np.where(x >= 0, x, alpha * x), beta)


@register("thresholded_relu")
def thresholded_relu(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    return np.where(x > np.float32(ctx.scalar("alpha", 1.0)), x, np.float32(0))


@register("linear_activation")
def linear_activation(ctx):  # type: ignore[no-untyped-def]
    return np.float32(ctx.scalar("alpha")) * ctx.x() + np.float32(ctx.scalar("beta", 0.0))


@register("scaled_tanh")
def scaled_tanh(ctx):  # type: ignore[no-untyped-def]
    return np.float32(ctx.scalar("alpha", 1.0)) * np.tanh(np.float32(ctx.scalar("beta", 1.0)) * ctx.x())


@register("softmax")
def softmax(ctx):  # type: ignore[no-untyped-def]
    x = ctx.x()
    axis = int(ctx.scalar("axis", -1))
    shifted = x - np.max(x, axis=axis, keepdims=True)  # subtracting the max keeps exp finite
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)
