"""Which PyTorch module a TFLite op came from, read from litert-torch's tensor names.

litert-torch names each tensor after the ``nn_module_stack`` of the fx node
that produced it (``backend/debuginfo/_build.py``): one segment per module the
node ran in, ``<module>.<ClassQualname>_<last path component>`` (the root has
no suffix), joined by ``/`` and closed by ``;`` plus a counter. Fused ops carry
several such locations separated by ``;;``:

    edgekit.backends.tflite.export.NamedIO/pkg.Encoder_model/pkg.Block_0/torch.nn.modules.linear.Linear_query;1

``ModuleIndex`` rebuilds those strings from ``model.named_modules()`` (modules
that are never called, ``ModuleList`` and ``ModuleDict``, have no segment, as
in torch.export) and answers "which module path is this op's". The first
segment is edgekit's ``NamedIO`` wrapper, whose ``model.`` prefix is dropped, so
paths read as the user wrote them ("encoder.layer.0.attention.self.query").
No converter here, only the torch module tree.
"""

from __future__ import annotations

from typing import Any

from edgekit.backends.tflite.reproducible import stable_name

# Op -> module classes whose weight that op carries (by class name, so no torch import is needed to match).
_WEIGHT_OWNERS: dict[str, tuple[str, ...]] = {
    "FULLY_CONNECTED": ("Linear", "GRU", "LSTM", "RNN", "Bilinear"),
    "BATCH_MATMUL": ("Linear", "GRU", "LSTM", "RNN"),
    "CONV_2D": ("Conv",),
    "DEPTHWISE_CONV_2D": ("Conv",),
    "TRANSPOSE_CONV": ("ConvTranspose",),
    "CONV_3D": ("Conv",),
    "EMBEDDING_LOOKUP": ("Embedding",),
}
_UNCALLED = ("ModuleList", "ModuleDict", "ParameterList", "ParameterDict")


def _class_fullname(cls: type) -> str:
    """The class name as litert-torch writes it (``module.Qualname``; builtins without the module), with a
    path-derived factory module made constant as the build writes it (``reproducible``)."""
    return cls.__qualname__ if cls.__module__ == "builtins" else stable_name(f"{cls.__module__}.{cls.__qualname__}")


class ModuleIndex:
    """litert-torch location strings of a (wrapped) torch model, mapped back to module paths."""

    def __init__(self, model: Any, strip_prefix: str = "model.") -> None:
        self.by_location: dict[str, str] = {}
        self.types: dict[str, str] = {}
        modules = dict(model.named_modules())
        for path, module in modules.items():
            if type(module).__name__ in _UNCALLED:
                continue
            parts = path.split(".") if path else []
            segments = [_class_fullname(type(model))]
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                sub = modules.get(prefix)
                if sub is None or type(sub).__name__ in _UNCALLED:
                    continue
                segments.append(f"{_class_fullname(type(sub))}_{parts[depth - 1]}")
            shown = path[len(strip_prefix):] if strip_prefix and path.startswith(strip_prefix) else path
            if strip_prefix and path == strip_prefix.rstrip("."):
                shown = ""
            location = "/".join(segments)
            self.by_location.setdefault(location, shown)
            self.types[shown] = type(module).__name__

    def locations(self, tensor_name: str) -> list[str]:
        """Module paths named in a tensor name, in the order they appear (known ones only, no repeats)."""
        found: list[str] = []
        for part in stable_name(tensor_name).split(";"):  # raw converter output or normalised bytes alike
            path = self.by_location.get(part.strip())
            if path is not None and path not in found:
                found.append(path)
        return found

    def module_for(self, op_name: str, tensor_name: str) -> str | None:
        """The module path of the op whose output tensor is ``tensor_name`` ("" never: the root is None).

        A weight op (FULLY_CONNECTED, CONV_2D, ...) takes the first named
        module of a class that owns such a weight (a fused name lists the
        LayerNorm before the Linear it feeds); any other op the first named
        module. None when the name holds no location of this model.
        """
        paths = [p for p in self.locations(tensor_name) if p]
        if not paths:
            return None
        owners = _WEIGHT_OWNERS.get(op_name)
        if owners:
            for path in paths:
                if any(owner in self.types.get(path, "") for owner in owners):
                    return path
        return paths[0]

    def module_for_op(self, op_name: str, tensor_names: list[str]) -> str | None:
        """``module_for`` on the first of ``tensor_names`` that names a module (the output, then the inputs:
        a graph output is renamed after the signature, but its weight keeps litert-torch's location)."""
        for name in tensor_names:
            found = self.module_for(op_name, name)
            if found is not None:
                return found
        return None
