"""A content key for a torch model and its example inputs, for per-process export caches.

One build makes several requests of the same model (int8 and fp16 for one
target, the same format for several targets); each backend exports it once and
reuses the result when this key matches. Needs torch (build side only).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any


def model_key(module: Any, inputs: Mapping[str, Any], extra: Iterable[str] = ()) -> str:
    """sha256 of what an export depends on: the module tree with each module's class (module and qualname),
    every parameter and buffer (bytes), the inputs' names, shapes and dtypes, and ``extra`` (rewrites, batch,
    output names: the caller must pass whatever else its export writes into the file)."""
    import torch

    digest = hashlib.sha256(repr(module).encode())
    # repr names classes without their modules, but litert-torch writes "<module>.<Qualname>" into tensor names:
    # the same tree from two class definitions must not share an export.
    for name, child in module.named_modules():
        digest.update(f"{name}={type(child).__module__}.{type(child).__qualname__}".encode())
    for name, tensor in list(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
        try:
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):  # a tensor type without a byte view: its text then
            digest.update(str(tensor.tolist()).encode())
    for name, tensor in inputs.items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
    digest.update("|".join(extra).encode())
    return digest.hexdigest()
