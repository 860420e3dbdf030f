"""A pure-numpy interpreter of saved Core ML ML Programs (``.mlpackage``).

It reads the package's own bytes: the ``model.mlmodel`` protobuf (through the
generated classes that ship with coremltools, loaded without importing
coremltools itself, see ``proto.py``) and ``weights/weight.bin`` (``blob.py``).
Ops are computed in float32 and rounded to each op's declared output dtype,
so an FP16 program behaves like an FP16 program.

It is a semantic reference for validation off macOS, not Apple's runtime:
kernels, fusion and accumulation order on a device differ, so results agree
within floating-point tolerance, not bit for bit.

Entry points: ``load_package(path) -> Package`` and ``Interpreter(package)``.
"""

from edgekit.backends.coreml.emulator.interpreter import Interpreter
from edgekit.backends.coreml.emulator.program import Package, load_package

__all__ = ["Interpreter", "Package", "load_package"]
