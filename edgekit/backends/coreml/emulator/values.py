"""Decoding MIL ``ValueType`` and ``Value`` protos into types and numpy arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.backends.coreml.emulator.dtypes import PROTO_DTYPES, SUB_BYTE, numpy_dtype, unpack_bits
from edgekit.errors import ArtifactError

# Types MIL stores as raw bytes in an immediate value (the rest use typed repeated fields).
_BYTES_TYPES = frozenset({"fp16", "int4", "int8", "uint1", "uint2", "uint3", "uint4", "uint6", "uint8", "uint32"})


@dataclass(frozen=True)
class TensorType:
    """A MIL tensor type: element type name and shape (``None`` for a dynamic dim).

    ``shape`` is ``()`` for scalars and ``None`` when even the rank is unknown.
    """

    dtype: str
    shape: tuple[int | None, ...] | None

    @property
    def is_float(self) -> bool:
        return self.dtype in ("fp16", "fp32", "fp64")


def tensor_type(value_type: Any) -> TensorType:
    """The ``TensorType`` of a ``ValueType`` proto; lists and dictionaries are not supported."""
    kind = value_type.WhichOneof("type")
    if kind != "tensorType":
        raise ArtifactError(
            f"the Core ML emulator does not support MIL values of kind {kind}",
            "Only tensor-valued programs are supported",
        )
    tensor = value_type.tensorType
    dtype = PROTO_DTYPES.get(tensor.dataType, f"dtype#{tensor.dataType}")
    if tensor.rank < 0:
        return TensorType(dtype, None)
    dims: list[int | None] = []
    for dim in tensor.dimensions:
        dims.append(int(dim.constant.size) if dim.WhichOneof("dimension") == "constant" else None)
    return TensorType(dtype, tuple(dims))


BlobReader = Callable[[str, int, str, tuple[int, ...]], np.ndarray]


def decode(value: Any, read_blob: BlobReader) -> np.ndarray | str:
    """Decode a ``Value`` proto (immediate or blob-file) into a numpy array.

    Strings come back as Python ``str`` (scalars) or object arrays.
    ``read_blob(file_name, offset, dtype, shape)`` reads blob-file values.
    """
    ttype = tensor_type(value.type)
    shape = ttype.shape or ()
    if any(d is None for d in shape):
        raise ArtifactError("a constant has a dynamic shape", "The model file is malformed; rebuild it")
    shape_ints = tuple(int(d) for d in shape)  # type: ignore[arg-type]
    kind = value.WhichOneof("value")
    if kind == "blobFileValue":
        return read_blob(value.blobFileValue.fileName, int(value.blobFileValue.offset), ttype.dtype, shape_ints)
    if kind != "immediateValue" or value.immediateValue.WhichOneof("value") != "tensor":
        raise ArtifactError(f"unsupported MIL constant encoding {kind}", "The model file is malformed; rebuild it")
    tensor = value.immediateValue.tensor
    field = tensor.WhichOneof("value")
    count = int(np.prod(shape_ints, dtype=np.int64)) if shape_ints else 1
    if ttype.dtype == "string":
        strings = list(tensor.strings.values)
        return strings[0] if not shape_ints else np.array(strings, dtype=object).reshape(shape_ints)
    if ttype.dtype in _BYTES_TYPES and field == "bytes":
        raw = np.frombuffer(tensor.bytes.values, dtype=np.uint8)
        if ttype.dtype in SUB_BYTE:
            nbits, signed = SUB_BYTE[ttype.dtype]
            return unpack_bits(raw, nbits, count, signed).reshape(shape_ints)
        return raw.view(numpy_dtype(ttype.dtype))[:count].reshape(shape_ints).copy()
    if field is None:
        return np.zeros(shape_ints, dtype=numpy_dtype(ttype.dtype))
    items = getattr(tensor, field).values
    if field == "bytes":  # a bytes payload for a type not listed above: reinterpret raw storage
        return np.frombuffer(items, dtype=numpy_dtype(ttype.dtype))[:count].reshape(shape_ints).copy()
    return np.asarray(list(items)).astype(numpy_dtype(ttype.dtype)).reshape(shape_ints)
