"""Every op the Core ML emulator claims, run from a saved .mlpackage and checked against torch.

All cases live in one MIL program (one conversion, one save, one emulator
run); each case is then its own test. A final test proves the program used
every op in the emulator's registry, so a newly registered op without a case
fails the suite.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekit.backends.coreml.emulator import Interpreter, load_package
from edgekit.backends.coreml.emulator.ops import supported_ops
from edgekit.errors import UnsupportedModelError

# Tests run with --import-mode=importlib, which does not put this folder on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from coreml_testing import save_program  # noqa: E402

R = np.random.default_rng(42)


def _f(*shape: int, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return R.uniform(low, high, size=shape).astype(np.float32)


@dataclass
class Case:
    """One op check: program inputs, a MIL builder, a torch reference."""

    id: str
    inputs: dict[str, np.ndarray]
    build: Callable[[Any, dict[str, Any]], Any]  # (mb, vars) -> var | tuple of vars
    ref: Callable[[dict[str, torch.Tensor]], Any]  # torch tensors -> tensor | tuple
    atol: float = 2e-5


CASES: list[Case] = []


def case(id: str, inputs: dict[str, np.ndarray], build, ref, atol: float = 2e-5) -> None:  # type: ignore[no-untyped-def]
    CASES.append(Case(id, inputs, build, ref, atol))


X = _f(2, 3, 5, 6)
Y = _f(2, 3, 5, 6)
POS = _f(2, 3, 4, low=0.1, high=3.0)

# ---------------------------------------------------------------- binary elementwise
for name, fn in {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "real_div": torch.div, "maximum": torch.maximum,
    "minimum": torch.minimum, "floor_div": torch.floor_divide, "mod": torch.remainder,
}.items():
    case(name, {"x": X, "y": Y[:1, :, :1]}, lambda mb, v, n=name: getattr(mb, n)(x=v["x"], y=v["y"]),
         lambda t, f=fn: f(t["x"], t["y"]), atol=1e-4)
case("pow", {"x": POS, "y": _f(2, 3, 4)}, lambda mb, v: mb.pow(x=v["x"], y=v["y"]), lambda t: torch.pow(t["x"], t["y"]), 1e-4)
for name, fn in {"equal": torch.eq, "not_equal": torch.ne, "greater": torch.gt, "greater_equal": torch.ge,
                 "less": torch.lt, "less_equal": torch.le}.items():
    ints = R.integers(-2, 3, size=(3, 4)).astype(np.float32)
    case(name, {"x": ints, "y": ints[::-1].copy()}, lambda mb, v, n=name: getattr(mb, n)(x=v["x"], y=v["y"]),
         lambda t, f=fn: f(t["x"], t["y"]))
for name, fn in {"logical_and": torch.logical_and, "logical_or": torch.logical_or, "logical_xor": torch.logical_xor}.items():
    case(name, {"x": _f(4, 5), "y": _f(4, 5)},
         lambda mb, v, n=name: getattr(mb, n)(x=mb.greater(x=v["x"], y=0.0), y=mb.greater(x=v["y"], y=0.0)),
         lambda t, f=fn: f(t["x"] > 0, t["y"] > 0))
case("logical_not", {"x": _f(4, 5)}, lambda mb, v: mb.logical_not(x=mb.greater(x=v["x"], y=0.0)), lambda t: ~(t["x"] > 0))
case("select", {"x": _f(4, 5), "a": _f(4, 5), "b": _f(4, 5)},
     lambda mb, v: mb.select(cond=mb.greater(x=v["x"], y=0.0), a=v["a"], b=v["b"]),
     lambda t: torch.where(t["x"] > 0, t["a"], t["b"]))

# ---------------------------------------------------------------- unary elementwise
UNIT = _f(3, 7, low=-0.95, high=0.95)
for name, fn, data in [
    ("abs", torch.abs, X), ("acos", torch.acos, UNIT), ("asin", torch.asin, UNIT), ("atan", torch.atan, X),
    ("atanh", torch.atanh, UNIT), ("ceil", torch.ceil, X), ("cos", torch.cos, X), ("cosh", torch.cosh, X),
    ("exp", torch.exp, X), ("exp2", torch.exp2, X), ("floor", torch.floor, X), ("round", torch.round, X),
    ("sign", torch.sign, X), ("sin", torch.sin, X), ("sinh", torch.sinh, X), ("sqrt", torch.sqrt, POS),
    ("square", torch.square, X), ("tan", torch.tan, UNIT), ("tanh", torch.tanh, X), ("erf", torch.erf, X),
    ("identity", lambda a: a, X),
]:
    case(name, {"x": data}, lambda mb, v, n=name: getattr(mb, n)(x=v["x"]), lambda t, f=fn: f(t["x"]), atol=1e-5)
case("inverse", {"x": POS}, lambda mb, v: mb.inverse(x=v["x"], epsilon=1e-3), lambda t: 1 / (t["x"] + 1e-3), 1e-5)
case("log", {"x": POS}, lambda mb, v: mb.log(x=v["x"]), lambda t: torch.log(t["x"]))
case("rsqrt", {"x": POS}, lambda mb, v: mb.rsqrt(x=v["x"]), lambda t: torch.rsqrt(t["x"]), 1e-5)
case("clip", {"x": X}, lambda mb, v: mb.clip(x=v["x"], alpha=-0.5, beta=0.7), lambda t: torch.clamp(t["x"], -0.5, 0.7))
case("threshold", {"x": X}, lambda mb, v: mb.threshold(x=v["x"], alpha=0.3), lambda t: torch.clamp(t["x"], min=0.3))

# ---------------------------------------------------------------- activations
ALPHA = _f(3, low=0.1, high=0.5)
BETA = _f(3, low=0.5, high=1.5)
for name, fn in [("relu", F.relu), ("relu6", F.relu6), ("sigmoid", torch.sigmoid), ("silu", F.silu),
                 ("softsign", F.softsign), ("softplus", F.softplus)]:
    case(name, {"x": X * 4}, lambda mb, v, n=name: getattr(mb, n)(x=v["x"]), lambda t, f=fn: f(t["x"]), 1e-5)
for mode, approximate in [("EXACT", "none"), ("TANH_APPROXIMATION", "tanh")]:
    case(f"gelu_{mode.lower()}", {"x": X * 3}, lambda mb, v, m=mode: mb.gelu(x=v["x"], mode=m),
         lambda t, a=approximate: F.gelu(t["x"], approximate=a), 1e-5)
case("gelu_sigmoid", {"x": X * 3}, lambda mb, v: mb.gelu(x=v["x"], mode="SIGMOID_APPROXIMATION"),
     lambda t: t["x"] * torch.sigmoid(1.702 * t["x"]), 1e-5)
case("sigmoid_hard", {"x": X * 4}, lambda mb, v: mb.sigmoid_hard(x=v["x"], alpha=0.3, beta=0.4),
     lambda t: torch.clamp(0.3 * t["x"] + 0.4, 0, 1))
case("leaky_relu", {"x": X}, lambda mb, v: mb.leaky_relu(x=v["x"], alpha=0.1), lambda t: F.leaky_relu(t["x"], 0.1))
case("elu", {"x": X}, lambda mb, v: mb.elu(x=v["x"], alpha=0.7), lambda t: F.elu(t["x"], 0.7), 1e-5)
case("prelu", {"x": X}, lambda mb, v: mb.prelu(x=v["x"], alpha=ALPHA), lambda t: F.prelu(t["x"], torch.from_numpy(ALPHA)))
case("clamped_relu", {"x": X * 3}, lambda mb, v: mb.clamped_relu(x=v["x"], alpha=0.2, beta=2.5),
     lambda t: torch.clamp(torch.where(t["x"] >= 0, t["x"], 0.2 * t["x"]), max=2.5))
case("thresholded_relu", {"x": X}, lambda mb, v: mb.thresholded_relu(x=v["x"], alpha=0.5),
     lambda t: torch.where(t["x"] > 0.5, t["x"], torch.zeros(())))
case("linear_activation", {"x": X}, lambda mb, v: mb.linear_activation(x=v["x"], alpha=1.5, beta=-0.2),
     lambda t: 1.5 * t["x"] - 0.2)
case("scaled_tanh", {"x": X}, lambda mb, v: mb.scaled_tanh(x=v["x"], alpha=1.5, beta=0.7), lambda t: 1.5 * torch.tanh(0.7 * t["x"]))
case("softplus_parametric", {"x": X}, lambda mb, v: mb.softplus_parametric(x=v["x"], alpha=ALPHA, beta=BETA),
     lambda t: torch.from_numpy(ALPHA)[:, None, None] * F.softplus(torch.from_numpy(BETA)[:, None, None] * t["x"]), 1e-5)
case("softmax", {"x": X * 5}, lambda mb, v: mb.softmax(x=v["x"], axis=1), lambda t: torch.softmax(t["x"], 1), 1e-6)

# ---------------------------------------------------------------- linear algebra, conv, pooling
W_LIN, B_LIN = _f(7, 6), _f(7)
case("linear", {"x": X}, lambda mb, v: mb.linear(x=v["x"], weight=W_LIN, bias=B_LIN),
     lambda t: F.linear(t["x"], torch.from_numpy(W_LIN), torch.from_numpy(B_LIN)), 1e-5)
case("matmul", {"x": _f(2, 4, 3, 5), "y": _f(4, 6, 5)},
     lambda mb, v: mb.matmul(x=v["x"], y=v["y"], transpose_y=True), lambda t: t["x"] @ t["y"].transpose(-1, -2), 1e-5)
case("matmul_tx", {"x": _f(5, 3), "y": _f(5, 4)}, lambda mb, v: mb.matmul(x=v["x"], y=v["y"], transpose_x=True),
     lambda t: t["x"].T @ t["y"], 1e-5)
W_CONV, B_CONV = _f(4, 3, 3, 3), _f(4)
case("conv", {"x": X}, lambda mb, v: mb.conv(x=v["x"], weight=W_CONV, bias=B_CONV, pad_type="custom", pad=[1, 0, 2, 1],
                                             strides=[2, 1], dilations=[1, 2]),
     lambda t: F.conv2d(F.pad(t["x"], (2, 1, 1, 0)), torch.from_numpy(W_CONV), torch.from_numpy(B_CONV), stride=(2, 1),
                        dilation=(1, 2)), 1e-5)
case("conv_same", {"x": X}, lambda mb, v: mb.conv(x=v["x"], weight=W_CONV, pad_type="same"),
     lambda t: F.conv2d(t["x"], torch.from_numpy(W_CONV), padding="same"), 1e-5)
W_DW = _f(6, 1, 3, 3)
case("conv_depthwise", {"x": _f(2, 6, 7, 7)}, lambda mb, v: mb.conv(x=v["x"], weight=W_DW, groups=6, strides=[2, 2],
                                                                   pad_type="custom", pad=[1, 1, 1, 1]),
     lambda t: F.conv2d(t["x"], torch.from_numpy(W_DW), stride=2, padding=1, groups=6), 1e-5)
W_DW2, B_DW2 = _f(12, 1, 3, 3), _f(12)  # depthwise with a channel multiplier of 2: the general grouped path
case("conv_depthwise_multiplier", {"x": _f(2, 6, 7, 7)},
     lambda mb, v: mb.conv(x=v["x"], weight=W_DW2, bias=B_DW2, groups=6, pad_type="same"),
     lambda t: F.conv2d(t["x"], torch.from_numpy(W_DW2), torch.from_numpy(B_DW2), padding="same", groups=6), 1e-5)
W_DW1 = _f(4, 1, 5)
case("conv1d_depthwise_dilated", {"x": _f(2, 4, 16)},
     lambda mb, v: mb.conv(x=v["x"], weight=W_DW1, groups=4, dilations=[2], strides=[3]),
     lambda t: F.conv1d(t["x"], torch.from_numpy(W_DW1), groups=4, dilation=2, stride=3), 1e-5)
W_C1G = _f(6, 2, 3)
case("conv1d_groups", {"x": _f(2, 4, 9)}, lambda mb, v: mb.conv(x=v["x"], weight=W_C1G, groups=2),
     lambda t: F.conv1d(t["x"], torch.from_numpy(W_C1G), groups=2), 1e-5)
W_T, B_T = _f(4, 3, 3, 3), _f(6)
case("conv_transpose", {"x": _f(2, 4, 5, 5)},
     lambda mb, v: mb.conv_transpose(x=v["x"], weight=W_T, bias=B_T, strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                                     groups=2, output_shape=[2, 6, 10, 10]),
     lambda t: F.conv_transpose2d(t["x"], torch.from_numpy(W_T), torch.from_numpy(B_T), stride=2, padding=1,
                                  output_padding=1, groups=2), 1e-5)
case("max_pool", {"x": X}, lambda mb, v: mb.max_pool(x=v["x"], kernel_sizes=[3, 2], strides=[2, 2], pad_type="custom",
                                                     pad=[1, 1, 0, 0], ceil_mode=True),
     lambda t: F.max_pool2d(t["x"], (3, 2), (2, 2), padding=(1, 0), ceil_mode=True))
case("avg_pool", {"x": X}, lambda mb, v: mb.avg_pool(x=v["x"], kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom",
                                                     pad=[1, 1, 1, 1], exclude_padding_from_average=True),
     lambda t: F.avg_pool2d(t["x"], 3, 2, padding=1, count_include_pad=False), 1e-6)
case("avg_pool_with_pad", {"x": X}, lambda mb, v: mb.avg_pool(x=v["x"], kernel_sizes=[2, 2], strides=[1, 1],
                                                              pad_type="custom", pad=[1, 1, 1, 1]),
     lambda t: F.avg_pool2d(t["x"], 2, 1, padding=1, count_include_pad=True), 1e-6)
case("l2_pool", {"x": X}, lambda mb, v: mb.l2_pool(x=v["x"], kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
     lambda t: F.lp_pool2d(t["x"], 2, 2, 2), 1e-5)

# ---------------------------------------------------------------- normalisation
MEAN, VAR, GAMMA, BETA3 = _f(3), _f(3, low=0.5, high=2), _f(3), _f(3)
case("batch_norm", {"x": X}, lambda mb, v: mb.batch_norm(x=v["x"], mean=MEAN, variance=VAR, gamma=GAMMA, beta=BETA3, epsilon=1e-3),
     lambda t: F.batch_norm(t["x"], *(torch.from_numpy(a) for a in (MEAN, VAR, GAMMA, BETA3)), eps=1e-3), 1e-5)
case("instance_norm", {"x": X}, lambda mb, v: mb.instance_norm(x=v["x"], gamma=GAMMA, beta=BETA3, epsilon=1e-5),
     lambda t: F.instance_norm(t["x"], weight=torch.from_numpy(GAMMA), bias=torch.from_numpy(BETA3), eps=1e-5), 1e-5)
LN_G, LN_B = _f(6), _f(6)
case("layer_norm", {"x": X}, lambda mb, v: mb.layer_norm(x=v["x"], axes=[-1], gamma=LN_G, beta=LN_B, epsilon=1e-5),
     lambda t: F.layer_norm(t["x"], (6,), torch.from_numpy(LN_G), torch.from_numpy(LN_B), 1e-5), 1e-5)
LN2_G = _f(3, 5)


def _layer_norm_mid(t: dict[str, torch.Tensor]) -> torch.Tensor:
    x = t["x"]
    mean = x.mean(dim=(1, 2), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(1, 2), keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * torch.from_numpy(LN2_G)[None, :, :, None]


case("layer_norm_middle_axes", {"x": X}, lambda mb, v: mb.layer_norm(x=v["x"], axes=[1, 2], gamma=LN2_G), _layer_norm_mid, 1e-5)
case("l2_norm", {"x": X}, lambda mb, v: mb.l2_norm(x=v["x"], epsilon=1e-6),
     lambda t: t["x"] / torch.sqrt((t["x"] ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-6), 1e-6)
case("local_response_norm", {"x": _f(2, 6, 4, 4)},
     lambda mb, v: mb.local_response_norm(x=v["x"], size=3, alpha=1e-2, beta=0.75, k=1.0),
     lambda t: F.local_response_norm(t["x"], 3, alpha=1e-2, beta=0.75, k=1.0), 1e-5)

# ---------------------------------------------------------------- resampling, attention
SMALL = _f(2, 3, 4, 5)
case("upsample_bilinear_align", {"x": SMALL},
     lambda mb, v: mb.upsample_bilinear(x=v["x"], scale_factor_height=2.0, scale_factor_width=3.0, align_corners=True),
     lambda t: F.interpolate(t["x"], size=(8, 15), mode="bilinear", align_corners=True), 1e-5)
case("upsample_bilinear_half_pixel", {"x": SMALL},
     lambda mb, v: mb.upsample_bilinear(x=v["x"], scale_factor_height=2.0, scale_factor_width=2.0, align_corners=False,
                                        half_pixel_centers=True),
     lambda t: F.interpolate(t["x"], scale_factor=2.0, mode="bilinear", align_corners=False), 1e-5)
case("resize_bilinear", {"x": SMALL},
     lambda mb, v: mb.resize_bilinear(x=v["x"], target_size_height=7, target_size_width=9, sampling_mode="STRICT_ALIGN_CORNERS"),
     lambda t: F.interpolate(t["x"], size=(7, 9), mode="bilinear", align_corners=True), 1e-5)
case("upsample_nearest_neighbor", {"x": SMALL},
     lambda mb, v: mb.upsample_nearest_neighbor(x=v["x"], scale_factor_height=2.0, scale_factor_width=3.0),
     lambda t: F.interpolate(t["x"], scale_factor=(2.0, 3.0), mode="nearest"))
MASK = np.where(R.random((1, 1, 5, 5)) > 0.3, 0.0, -1e4).astype(np.float32)
case("scaled_dot_product_attention", {"q": _f(2, 3, 5, 4), "k": _f(2, 3, 5, 4), "v": _f(2, 3, 5, 4)},
     lambda mb, v: mb.scaled_dot_product_attention(query=v["q"], key=v["k"], value=v["v"], attn_mask=MASK),
     lambda t: F.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=torch.from_numpy(MASK)), 1e-5)

# ---------------------------------------------------------------- layout
# iOS 17 rule: a 0 copies the input dim it lines up with from the right (here x.shape[1] = 3).
case("reshape", {"x": X}, lambda mb, v: mb.reshape(x=v["x"], shape=[0, -1, 6]), lambda t: t["x"].reshape(3, 10, 6))
case("reshape_like", {"x": X, "r": _f(6, 5, 6)},
     lambda mb, v: mb.reshape_like(x=v["x"], ref_tensors=(v["r"],), begins=(0,), ends=(3,), end_masks=(True,)),
     lambda t: t["x"].reshape(6, 5, 6))
case("transpose", {"x": X}, lambda mb, v: mb.transpose(x=v["x"], perm=[0, 3, 1, 2]), lambda t: t["x"].permute(0, 3, 1, 2))
case("concat", {"x": X, "y": Y}, lambda mb, v: mb.concat(values=[v["x"], v["y"], v["x"]], axis=-1),
     lambda t: torch.cat([t["x"], t["y"], t["x"]], -1))
case("concat_interleave", {"x": X, "y": Y}, lambda mb, v: mb.concat(values=[v["x"], v["y"]], axis=1, interleave=True),
     lambda t: torch.stack([t["x"], t["y"]], 2).reshape(2, 6, 5, 6))
case("stack", {"x": X, "y": Y}, lambda mb, v: mb.stack(values=[v["x"], v["y"]], axis=2), lambda t: torch.stack([t["x"], t["y"]], 2))
case("split", {"x": X}, lambda mb, v: tuple(mb.split(x=v["x"], split_sizes=[1, 4], axis=2)),
     lambda t: tuple(torch.split(t["x"], [1, 4], 2)))
case("split_even", {"x": X}, lambda mb, v: tuple(mb.split(x=v["x"], num_splits=3, axis=-1)),
     lambda t: tuple(torch.split(t["x"], 2, -1)))
case("squeeze", {"x": _f(2, 1, 3, 1)}, lambda mb, v: mb.squeeze(x=v["x"], axes=[1]), lambda t: t["x"].squeeze(1))
case("expand_dims", {"x": _f(2, 3)}, lambda mb, v: mb.expand_dims(x=v["x"], axes=[0, -1]), lambda t: t["x"][None, :, :, None])
case("flatten2d", {"x": X}, lambda mb, v: mb.flatten2d(x=v["x"], axis=2), lambda t: t["x"].reshape(6, 30))
case("slice_by_index", {"x": X},
     lambda mb, v: mb.slice_by_index(x=v["x"], begin=[0, 1, 4, 0], end=[2, 3, 0, 5], stride=[1, 1, -2, 2],
                                     begin_mask=[True, False, False, False], end_mask=[False, False, True, False],
                                     squeeze_mask=[False, False, False, False]),
     lambda t: torch.flip(t["x"][:, 1:3], [2])[:, :, ::2, 0:5:2])
case("slice_by_index_squeeze", {"x": X},
     lambda mb, v: mb.slice_by_index(x=v["x"], begin=[0, 2, 0, 0], end=[2, 3, 5, 6], squeeze_mask=[False, True, False, False]),
     lambda t: t["x"][:, 2])
case("slice_by_size", {"x": X}, lambda mb, v: mb.slice_by_size(x=v["x"], begin=[0, 1, 2, 0], size=[-1, 2, 3, -1]),
     lambda t: t["x"][:, 1:3, 2:5])
IDX = np.array([[2, 0], [-1, 1]], dtype=np.int32)
case("gather", {"x": X}, lambda mb, v: mb.gather(x=v["x"], indices=IDX, axis=2),
     lambda t: t["x"][:, :, torch.tensor([[2, 0], [4, 1]])])
BIDX = R.integers(0, 6, size=(2, 4)).astype(np.int32)
case("gather_batch_dims", {"x": _f(2, 6, 3)}, lambda mb, v: mb.gather(x=v["x"], indices=BIDX, axis=1, batch_dims=1),
     lambda t: torch.stack([t["x"][b, torch.from_numpy(BIDX[b]).long()] for b in range(2)]))
AIDX = R.integers(0, 5, size=(2, 3, 2, 6)).astype(np.int32)
case("gather_along_axis", {"x": X}, lambda mb, v: mb.gather_along_axis(x=v["x"], indices=AIDX, axis=2),
     lambda t: torch.gather(t["x"], 2, torch.from_numpy(AIDX).long()))
NDIDX = np.array([[0, 1], [1, 2], [0, 0]], dtype=np.int32)
case("gather_nd", {"x": X}, lambda mb, v: mb.gather_nd(x=v["x"], indices=NDIDX),
     lambda t: t["x"][torch.tensor([0, 1, 0]), torch.tensor([1, 2, 0])])
for mode, torch_mode in [("constant", "constant"), ("reflect", "reflect"), ("replicate", "replicate")]:
    case(f"pad_{mode}", {"x": X}, lambda mb, v, m=mode: mb.pad(x=v["x"], pad=[1, 2, 2, 1], mode=m, constant_val=0.5),
         lambda t, m=torch_mode: F.pad(t["x"], (2, 1, 1, 2), mode=m, **({"value": 0.5} if m == "constant" else {})))
case("tile", {"x": _f(2, 3)}, lambda mb, v: mb.tile(x=v["x"], reps=[2, 3]), lambda t: t["x"].repeat(2, 3))
case("reverse", {"x": X}, lambda mb, v: mb.reverse(x=v["x"], axes=[1, 3]), lambda t: torch.flip(t["x"], [1, 3]))
case("cast_int", {"x": X * 3}, lambda mb, v: mb.cast(x=v["x"], dtype="int32"), lambda t: (t["x"] * 1).trunc().int())
case("cast_fp16", {"x": X}, lambda mb, v: mb.cast(x=mb.cast(x=v["x"], dtype="fp16"), dtype="fp32"),
     lambda t: t["x"].half().float(), 0.0)
case("shape", {"x": X}, lambda mb, v: mb.shape(x=v["x"]), lambda t: torch.tensor(t["x"].shape, dtype=torch.int32))
case("fill", {"x": _f(2)}, lambda mb, v: mb.add(x=mb.fill(shape=mb.shape(x=v["x"]), value=1.5), y=v["x"]),
     lambda t: t["x"] + 1.5)
case("fill_like", {"x": X}, lambda mb, v: mb.fill_like(ref_tensor=v["x"], value=2.5), lambda t: torch.full_like(t["x"], 2.5))
case("range_1d", {"x": _f(2)},
     lambda mb, v: mb.range_1d(start=1, end=mb.gather(x=mb.shape(x=mb.tile(x=v["x"], reps=[5])), indices=0), step=3),
     lambda t: torch.arange(1, 10, 3, dtype=torch.int32))
case("cumsum", {"x": X}, lambda mb, v: mb.cumsum(x=v["x"], axis=2, exclusive=True, reverse=True),
     lambda t: torch.flip(torch.cumsum(torch.flip(t["x"], [2]), 2) - torch.flip(t["x"], [2]), [2]), 1e-5)
case("band_part", {"x": _f(2, 5, 5)}, lambda mb, v: mb.band_part(x=v["x"], lower=1, upper=0),
     lambda t: torch.tril(t["x"]) - torch.tril(t["x"], -2))
OH = np.array([[0, 3], [2, 1]], dtype=np.int32)
case("one_hot", {"x": _f(2)}, lambda mb, v: mb.one_hot(indices=OH, one_hot_vector_size=4, axis=-1, on_value=1.0, off_value=0.0),
     lambda t: F.one_hot(torch.from_numpy(OH).long(), 4).float())
case("pixel_shuffle", {"x": _f(2, 8, 3, 4)}, lambda mb, v: mb.pixel_shuffle(x=v["x"], upscale_factor=2),
     lambda t: F.pixel_shuffle(t["x"], 2))
case("pixel_unshuffle", {"x": _f(2, 2, 4, 6)}, lambda mb, v: mb.pixel_unshuffle(x=v["x"], downscale_factor=np.uint32(2)),
     lambda t: F.pixel_unshuffle(t["x"], 2))

# ---------------------------------------------------------------- reductions
for name, fn in {
    "reduce_sum": lambda x: x.sum((1, 3), keepdim=True), "reduce_mean": lambda x: x.mean((1, 3), keepdim=True),
    "reduce_max": lambda x: x.amax((1, 3), keepdim=True), "reduce_min": lambda x: x.amin((1, 3), keepdim=True),
    "reduce_prod": lambda x: x.prod(1, keepdim=True).prod(3, keepdim=True),
    "reduce_sum_square": lambda x: (x * x).sum((1, 3), keepdim=True),
    "reduce_l1_norm": lambda x: x.abs().sum((1, 3), keepdim=True),
    "reduce_l2_norm": lambda x: torch.sqrt((x * x).sum((1, 3), keepdim=True)),
    "reduce_log_sum": lambda x: torch.log(x.abs().sum((1, 3), keepdim=True)),
    "reduce_log_sum_exp": lambda x: torch.logsumexp(x, (1, 3), keepdim=True),
}.items():
    data = np.abs(X) if name == "reduce_log_sum" else X
    case(name, {"x": data}, lambda mb, v, n=name: getattr(mb, n)(x=v["x"], axes=[1, -1], keep_dims=True),
         lambda t, f=fn: f(t["x"]), 1e-4)
case("reduce_mean_all", {"x": X}, lambda mb, v: mb.reduce_mean(x=v["x"]), lambda t: t["x"].mean(), 1e-6)
case("reduce_argmax", {"x": X}, lambda mb, v: mb.reduce_argmax(x=v["x"], axis=2), lambda t: t["x"].argmax(2).int())
case("reduce_argmin", {"x": X}, lambda mb, v: mb.reduce_argmin(x=v["x"], axis=-1, keep_dims=True),
     lambda t: t["x"].argmin(-1, keepdim=True).int())


# ---------------------------------------------------------------- program


def _program(cases: list[Case]) -> tuple[Any, dict[str, list[str]]]:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, types

    placeholders = {}
    for c in cases:
        for key, value in c.inputs.items():
            dtype = types.int32 if value.dtype.kind in "iu" else types.fp32
            placeholders[f"{c.id}__{key}"] = mb.placeholder(shape=value.shape, dtype=dtype)
    outputs: dict[str, list[str]] = {}
    with Function(placeholders, opset_version=ct.target.iOS18) as function:
        results = []
        for c in cases:
            values = {key: function.inputs[f"{c.id}__{key}"] for key in c.inputs}
            produced = c.build(mb, values)
            produced = produced if isinstance(produced, tuple) else (produced,)
            names = []
            for i, var in enumerate(produced):
                if var.dtype == types.bool:  # Core ML outputs cannot be bool
                    var = mb.cast(x=var, dtype="int32")
                out = mb.identity(x=var, name=f"{c.id}__out{i}")
                results.append(out)
                names.append(out.name)
            outputs[c.id] = names
        function.set_outputs(results)
    program = Program()
    program.add_function("main", function)
    return program, outputs


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], dict[str, list[str]], Any]:
    program, names = _program(CASES)
    path = save_program(program, tmp_path_factory.mktemp("ops") / "ops.mlpackage")
    package = load_package(path)
    feeds = {f"{c.id}__{k}": v for c in CASES for k, v in c.inputs.items()}
    return Interpreter(package).run(feeds), names, package


@pytest.mark.parametrize("op_case", CASES, ids=[c.id for c in CASES])
def test_op_matches_torch(op_case: Case, emulated) -> None:  # type: ignore[no-untyped-def]
    results, names, _ = emulated
    with torch.no_grad():
        expected = op_case.ref({k: torch.from_numpy(v) for k, v in op_case.inputs.items()})
    expected = expected if isinstance(expected, tuple) else (expected,)
    for name, want in zip(names[op_case.id], expected, strict=True):
        got = results[name]
        want = want.numpy()
        if want.dtype == np.bool_:
            want = want.astype(np.int32)
        assert got.shape == want.shape, (got.shape, want.shape)
        if want.dtype.kind in "iub":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, atol=op_case.atol, rtol=max(op_case.atol, 1e-6))


def test_every_registered_op_is_covered(emulated) -> None:  # type: ignore[no-untyped-def]
    _, _, package = emulated
    used = {op.type for op in package.main.operations}
    constexpr = {op for op in supported_ops() if op.startswith("constexpr_")}  # covered by the constexpr tests
    missing = set(supported_ops()) - used - constexpr
    assert not missing, f"registered ops without a test case: {sorted(missing)}"


def test_fp16_program_rounds_at_every_op(tmp_path: Path) -> None:
    """exp then mul in FP16: each op's fp32 result is rounded to fp16 before the next op reads it."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    x = _f(4, 8)

    @mb.program(input_specs=[mb.TensorSpec(shape=x.shape)], opset_version=ct.target.iOS17)
    def program(x):  # type: ignore[no-untyped-def]
        h = mb.cast(x=x, dtype="fp16")
        y = mb.mul(x=mb.exp(x=h), y=np.float16(1.37))
        return mb.cast(x=y, dtype="fp32")

    package = load_package(save_program(program, tmp_path / "fp16.mlpackage", target="iOS17"))
    got = next(iter(Interpreter(package).run({"x": x}).values()))
    h = torch.from_numpy(x).half()
    want = (torch.exp(h) * torch.tensor(1.37, dtype=torch.float16)).float().numpy()  # torch rounds per op too
    ulp = np.spacing(np.abs(want).astype(np.float16)).astype(np.float32)
    assert np.all(np.abs(got - want) <= ulp)  # exp may differ by one fp16 ulp between libms
    assert not np.allclose(got, np.exp(x) * 1.37, rtol=1e-6)  # and it is not an fp32 result


def test_unknown_op_names_the_op_and_where_it_is(tmp_path: Path) -> None:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 5))], opset_version=ct.target.iOS17)
    def program(x):  # type: ignore[no-untyped-def]
        return mb.argsort(x=mb.relu(x=x), axis=-1, name="sorted_ids")

    package = load_package(save_program(program, tmp_path / "unknown.mlpackage", target="iOS17"))
    with pytest.raises(UnsupportedModelError) as info:
        Interpreter(package)
    message = str(info.value)
    assert "argsort" in message and "sorted_ids" in message and "op #" in message and "main" in message


W_FLEX = _f(5, 12)


@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_flexible_batch_program_runs_any_batch(tmp_path: Path) -> None:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import get_new_symbol

    batch = get_new_symbol()

    @mb.program(input_specs=[mb.TensorSpec(shape=(batch, 3, 4))], opset_version=ct.target.iOS17)
    def program(x):  # type: ignore[no-untyped-def]
        flat = mb.reshape(x=x, shape=[-1, 12])
        return mb.softmax(x=mb.linear(x=flat, weight=W_FLEX), axis=-1)

    interpreter = Interpreter(load_package(save_program(program, tmp_path / "flex.mlpackage", target="iOS17")))
    for n in (1, 3, 17):
        x = _f(n, 3, 4)
        got = next(iter(interpreter.run({"x": x}).values()))
        want = torch.softmax(torch.from_numpy(x).reshape(n, 12) @ torch.from_numpy(W_FLEX).T, -1).numpy()
        np.testing.assert_allclose(got, want, atol=1e-6)

