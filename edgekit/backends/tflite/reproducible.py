"""Make a .tflite's bytes independent of where the model's Python file lies.

litert-torch names every tensor after the ``nn_module_stack`` of the node
that made it, each segment ``<class module>.<class qualname>_<attribute>``
(see ``names.py``). A model built by a factory *file* (``model.py:create``)
has classes whose module edgekit names ``edgekit_factory_<12 hex>``, the
hex being a hash of the file's absolute path (``edgekit.model``), so the
same model built from another checkout wrote other tensor names and other
bytes. Measured on the tiny CNN: 14 to 27 occurrences per candidate, in
every TFLite recipe; no other format records class modules.

``stable_names`` replaces the 12 hex digits by zeros. The replacement has
the same length, so no flatbuffer offset moves and nothing but those
characters changes; the names stay unique because the attribute paths
after them differ. ``ModuleIndex`` reads names through ``stable_name`` too,
so op-to-module mapping works on raw and normalised models alike.

Nothing else in a .tflite varied: across processes, folders and runs every
recipe wrote the same bytes (docs/reproducibility.md).
"""

from __future__ import annotations

import re

# edgekit.model names a factory file's module "edgekit_factory_" + sha256(absolute path)[:12].
_PATH_MODULE = re.compile(r"edgekit_factory_[0-9a-f]{12}")
_PATH_MODULE_BYTES = re.compile(_PATH_MODULE.pattern.encode("ascii"))
STABLE_MODULE = "edgekit_factory_" + "0" * 12


def stable_name(text: str) -> str:
    """``text`` (a tensor name or class path) with every path-derived factory module name made constant."""
    return _PATH_MODULE.sub(STABLE_MODULE, text)


def stable_names(data: bytes) -> bytes:
    """A .tflite's bytes with every path-derived factory module name made constant (same length: a
    byte-for-byte substitution inside the flatbuffer's strings; idempotent)."""
    return _PATH_MODULE_BYTES.sub(STABLE_MODULE.encode("ascii"), data)
