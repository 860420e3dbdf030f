"""MIL data types: names, numpy storage dtypes and bit widths.

MIL names its types ``fp16``, ``int4``, ``uint1`` ...; the protobuf uses the
``DataType`` enum numbers below (from MIL.proto). Sub-byte integers are held
unpacked in ``int8``/``uint8`` arrays once decoded.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import ArtifactError

# MIL.proto DataType enum number -> MIL type name.
PROTO_DTYPES: dict[int, str] = {
    1: "bool", 2: "string", 10: "fp16", 11: "fp32", 12: "fp64", 13: "bf16",
    21: "int8", 22: "int16", 23: "int32", 24: "int64", 25: "int4",
    31: "uint8", 32: "uint16", 33: "uint32", 34: "uint64",
    35: "uint4", 36: "uint2", 37: "uint1", 38: "uint6", 39: "uint3",
}

# MIL type name -> numpy dtype that holds a decoded value.
NUMPY: dict[str, np.dtype] = {
    "bool": np.dtype(np.bool_), "fp16": np.dtype(np.float16), "fp32": np.dtype(np.float32),
    "fp64": np.dtype(np.float64), "int8": np.dtype(np.int8), "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32), "int64": np.dtype(np.int64), "int4": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8), "uint16": np.dtype(np.uint16), "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64), "uint4": np.dtype(np.uint8), "uint2": np.dtype(np.uint8),
    "uint1": np.dtype(np.uint8), "uint6": np.dtype(np.uint8), "uint3": np.dtype(np.uint8),
    "string": np.dtype(object),
}

# Sub-byte types: bit width and signedness. Packed least-significant bits first.
SUB_BYTE: dict[str, tuple[int, bool]] = {
    "int4": (4, True), "uint4": (4, False), "uint1": (1, False), "uint2": (2, False),
    "uint3": (3, False), "uint6": (6, False),
}

# Names the ``cast`` op and ``constexpr_cast`` use for their target dtype.
CAST_NAMES: dict[str, str] = {
    "fp16": "fp16", "fp32": "fp32", "fp64": "fp32", "int32": "int32", "int64": "int32", "int16": "int16",
    "uint16": "uint16", "int8": "int8", "uint8": "uint8", "bool": "bool",
}

FLOATS = frozenset({"fp16", "fp32", "fp64", "bf16"})


def numpy_dtype(mil: str) -> np.dtype:
    """The numpy dtype holding values of MIL type ``mil``; unknown types are an ArtifactError."""
    try:
        return NUMPY[mil]
    except KeyError:
        raise ArtifactError(
            f"the Core ML emulator does not support the MIL data type {mil}",
            "Rebuild the model with float16/float32 or 8/4-bit weights",
        ) from None


def unpack_bits(packed: np.ndarray, nbits: int, count: int, signed: bool) -> np.ndarray:
    """Unpack ``count`` ``nbits``-wide integers packed LSB-first into bytes.

    Signed values are sign-extended (two's complement) into int8; unsigned go
    to uint8.
    """
    bits = np.unpackbits(np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1), bitorder="little")
    if bits.size < nbits * count:
        raise ArtifactError(
            f"packed {nbits}-bit data holds {bits.size // nbits} values but {count} are declared",
            "The weight file is truncated or does not match the model; rebuild the artifact",
        )
    bits = bits[: nbits * count].reshape(count, nbits).astype(np.int32)
    values = (bits << np.arange(nbits, dtype=np.int32)).sum(axis=1)
    if signed:
        values = np.where(values >= 1 << (nbits - 1), values - (1 << nbits), values)
        return values.astype(np.int8)
    return values.astype(np.uint8)
