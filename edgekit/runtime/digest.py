"""The digest of a request's inputs: what the audit log records instead of the inputs, and the cache key."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np


def input_digest(feeds: Mapping[str, np.ndarray]) -> str:
    """Hex sha256 over every input's name, dtype, shape and bytes, in name order.

    Two requests share a digest exactly when a model sees the same inputs, so
    ``edgekit audit find --input-digest`` finds a decision from the inputs a
    user still holds, and the log never holds the inputs themselves. Each
    field is length-prefixed so that no two different requests encode alike.
    """
    digest = hashlib.sha256()
    for name in sorted(feeds):
        array = np.ascontiguousarray(feeds[name])
        header = f"{name}\0{array.dtype.str}\0{','.join(map(str, array.shape))}".encode()
        digest.update(len(header).to_bytes(4, "big") + header)
        digest.update(array.nbytes.to_bytes(8, "big"))
        digest.update(array.tobytes())
    return digest.hexdigest()
