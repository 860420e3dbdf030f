"""Reader for an ML Program's ``weights/weight.bin``.

Layout (little endian), as written by coremltools' MIL blob storage:

- a 64-byte file header: uint32 blob count, uint32 format version (2), padding;
- per blob, a 64-byte metadata record at the offset a const's
  ``blobFileValue.offset`` names: uint32 sentinel ``0xDEADBEEF``, uint32
  storage dtype code, uint64 data size in bytes, uint64 absolute data offset,
  padding; the data follows (64-byte aligned).

Storage dtype codes: 1 fp16, 2 fp32, 3 uint8, 4 int8, 5 bf16, 6 int16,
7 uint16, 8 int4, 9 uint1, 10 uint2, 11 uint4, 12 uint3, 13 uint6, 14 int32,
15 uint32. Sub-byte data is packed least-significant bits first.

The element count and shape come from the proto's declared tensor type; the
record's dtype code is checked against the declared type so that a weight
file that does not belong to the model is an error, not garbage numbers.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edgekit.backends.coreml.emulator.dtypes import SUB_BYTE, numpy_dtype, unpack_bits
from edgekit.errors import ArtifactError

SENTINEL = 0xDEADBEEF
HEADER_SIZE = 64
RECORD_SIZE = 64

STORAGE_CODES: dict[int, str] = {
    1: "fp16", 2: "fp32", 3: "uint8", 4: "int8", 5: "bf16", 6: "int16", 7: "uint16", 8: "int4",
    9: "uint1", 10: "uint2", 11: "uint4", 12: "uint3", 13: "uint6", 14: "int32", 15: "uint32",
}


class BlobFile:
    """One ``weight.bin``, read once into memory; ``read`` decodes a blob by its record offset."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._data = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(
                f"cannot read Core ML weights {path}: {exc.strerror or exc}", "Check the .mlpackage is complete"
            ) from None
        if len(self._data) < HEADER_SIZE:
            raise ArtifactError(f"{path} is too short to be a Core ML weight file", "Rebuild the artifact")
        self.count, self.version = struct.unpack_from("<II", self._data, 0)

    def record(self, offset: int) -> tuple[str, int, int]:
        """The (storage dtype, size in bytes, data offset) of the blob whose record is at ``offset``."""
        if offset < HEADER_SIZE or offset + RECORD_SIZE > len(self._data):
            raise ArtifactError(
                f"{self.path.name}: blob offset {offset} lies outside the file ({len(self._data)} bytes)",
                "The weight file is truncated or belongs to another model; rebuild the artifact",
            )
        sentinel, code, size, data_offset = struct.unpack_from("<IIQQ", self._data, offset)
        if sentinel != SENTINEL:
            raise ArtifactError(
                f"{self.path.name}: no blob record at offset {offset} (sentinel {sentinel:#x})",
                "The weight file is corrupt or belongs to another model; rebuild the artifact",
            )
        if code not in STORAGE_CODES:
            raise ArtifactError(f"{self.path.name}: blob at {offset} has unknown dtype code {code}", "Rebuild the artifact")
        if data_offset + size > len(self._data):
            raise ArtifactError(f"{self.path.name}: blob at {offset} runs past the end of the file", "Rebuild the artifact")
        return STORAGE_CODES[code], size, data_offset

    def read(self, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        """Decode the blob at record ``offset`` as MIL type ``dtype`` with ``shape``."""
        stored, size, data_offset = self.record(offset)
        if stored != dtype:
            raise ArtifactError(
                f"{self.path.name}: blob at {offset} is stored as {stored} but the model declares {dtype}",
                "The weight file does not belong to this model; rebuild the artifact",
            )
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        raw = np.frombuffer(self._data, dtype=np.uint8, count=size, offset=data_offset)
        if dtype in SUB_BYTE:
            nbits, signed = SUB_BYTE[dtype]
            return unpack_bits(raw, nbits, count, signed).reshape(shape)
        np_dtype = numpy_dtype(dtype)
        if size != count * np_dtype.itemsize:
            raise ArtifactError(
                f"{self.path.name}: blob at {offset} holds {size} bytes, the model declares {count} x {dtype}",
                "The weight file does not belong to this model; rebuild the artifact",
            )
        return raw.view(np_dtype).reshape(shape).copy()
