"""Fast float32 → float16 rounding that stays in float32.

numpy's ``astype(float16)`` converts element by element (measured: 5 of 18 s
of a MobileNet batch). FP16 programs round at every op boundary, so the
interpreter instead rounds float32 values to the nearest float16 value with
integer arithmetic on the bit pattern and keeps them as float32, which the
next op would have promoted them to anyway. Results equal
``x.astype(np.float16).astype(np.float32)`` bit for bit (tested), including
ties to even, subnormals, overflow to infinity and NaN.

The work runs in cache-sized chunks: a whole 224x224 activation (tens of MB)
passed through the ~8 integer steps one array at a time was bound by memory
bandwidth (145 ms for 7.2 M values); chunks of 32 K values stay in L2 and
took a third of that. Subnormals and overflow, rare in activations, are
fixed up only in the chunks that hold any (a min/max test per chunk).
"""

from __future__ import annotations

import numpy as np

_SCALE_UP = np.float32(2.0**24)
_SCALE_DOWN = np.float32(2.0**-24)
_HALF_MIN_NORMAL_BITS = np.uint32(0x38800000)  # 2**-14
_HALF_OVERFLOW_BITS = np.uint32(0x477FF000)  # 65520, halfway above 65504: from here up a value rounds to inf
_ONE = np.uint32(1)
_KEEP = np.uint32(0xFFFFE000)
_ROUND = np.uint32(0x0FFF)
_ABS = np.uint32(0x7FFFFFFF)
_SHIFT = np.uint32(13)
CHUNK = 1 << 15  # values per chunk (128 KB of float32): inside L2 with the temporaries


def round_to_fp16(x: np.ndarray) -> np.ndarray:
    """Round a float32 array to float16 precision and range; the result is a new float32 array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    bits_all, rounded_all = flat_x.view(np.uint32), flat_out.view(np.uint32)
    count = flat_x.size
    scratch = np.empty(min(count, CHUNK), dtype=np.uint32)
    for start in range(0, count, CHUNK):
        stop = min(start + CHUNK, count)
        bits, rounded, magnitude = bits_all[start:stop], rounded_all[start:stop], scratch[: stop - start]
        # Round the 23-bit mantissa to 10 bits, ties to even: add 0xFFF plus the lowest kept bit, then truncate.
        np.right_shift(bits, _SHIFT, out=rounded)
        np.bitwise_and(rounded, _ONE, out=rounded)
        np.add(rounded, _ROUND, out=rounded)
        np.add(rounded, bits, out=rounded)
        np.bitwise_and(rounded, _KEEP, out=rounded)
        np.bitwise_and(bits, _ABS, out=magnitude)
        if magnitude.max() >= _HALF_OVERFLOW_BITS:  # overflow to ±inf; NaN stays NaN
            large = np.flatnonzero(magnitude >= _HALF_OVERFLOW_BITS)
            values = flat_x[start:stop][large]
            flat_out[start:stop][large] = np.where(np.isnan(values), values, np.copysign(np.float32(np.inf), values))
        # |x| - 1 as an unsigned integer: exact zeros wrap to the top, so the very common zeros of a ReLU
        # never take the (slow, fancy-indexed) subnormal path, which the mantissa rounding got right already.
        np.subtract(magnitude, _ONE, out=magnitude)
        if magnitude.min() < _HALF_MIN_NORMAL_BITS - _ONE:
            # below the smallest normal half, values are multiples of 2**-24 (np.round is ties-to-even too)
            small = np.flatnonzero(magnitude < _HALF_MIN_NORMAL_BITS - _ONE)
            flat_out[start:stop][small] = np.round(flat_x[start:stop][small] * _SCALE_UP) * _SCALE_DOWN
    return out
