"""The oldest ONNX Runtime that loads a model, from the opset and IR version the model declares.

ONNX Runtime releases implement the default-domain opset and IR version of
the ONNX release they ship with (ONNX Runtime's compatibility table). A
model needs a runtime that implements its highest declared opset and its IR
version; the table lists, per opset, that runtime and the IR it reads.
Models newer than the table are given the runtime that validated them here,
the oldest one known to run them.
"""

from __future__ import annotations

import importlib.metadata

import onnx

# opset: (oldest onnxruntime implementing it, IR version that release reads)
_RUNTIME_BY_OPSET: dict[int, tuple[str, int]] = {
    17: ("1.13.0", 8),
    18: ("1.14.0", 8),
    19: ("1.15.0", 9),
    20: ("1.17.0", 9),
    21: ("1.18.0", 10),
}


def min_onnxruntime(model: onnx.ModelProto) -> str:
    """The oldest onnxruntime version that loads ``model``; the installed one beyond the table."""
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    for known in sorted(_RUNTIME_BY_OPSET):
        runtime, ir_version = _RUNTIME_BY_OPSET[known]
        if opset <= known and model.ir_version <= ir_version:
            return runtime
    return importlib.metadata.version("onnxruntime")
