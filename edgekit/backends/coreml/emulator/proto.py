"""The Core ML protobuf classes, loaded without importing coremltools.

coremltools ships generated ``*_pb2`` modules in ``coremltools/proto``, but
``import coremltools.proto.Model_pb2`` first runs ``coremltools/__init__``,
which imports torch and the converters (measured: ~15 s and hundreds of
modules). The generated files only need ``google.protobuf``, so this module
imports them from the installed wheel's folder under a private package name.

Device-side dependency: the coremltools wheel must be *installed* (its
``proto`` folder is read) together with ``protobuf``; neither torch nor any
converter is imported. When coremltools' own proto package is already
imported (the build process), that one is reused so that only one copy of the
descriptors exists in the process.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgekit.errors import BackendUnavailableError

_PRIVATE = "edgekit.backends.coreml.emulator._coreml_proto"


def _proto_dir() -> Path:
    try:
        spec = importlib.util.find_spec("coremltools")  # finds the package without executing it
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            "reading .mlpackage files needs the Core ML protobuf definitions from the 'coremltools' package",
            'Install it with: pip install "edgekit[coreml-emulator]" (coremltools is read, not imported, on Linux)',
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "proto"
    if not (folder / "Model_pb2.py").is_file():
        raise BackendUnavailableError(
            f"the installed coremltools has no proto/Model_pb2.py (looked in {folder})", "Reinstall coremltools"
        )
    return folder


@lru_cache(maxsize=1)
def model_pb2() -> Any:
    """The ``Model_pb2`` module (``Model``, feature types, ``mlProgram``)."""
    if "coremltools.proto.Model_pb2" in sys.modules:
        return sys.modules["coremltools.proto.Model_pb2"]
    try:
        import google.protobuf  # noqa: F401
    except ModuleNotFoundError:
        raise BackendUnavailableError(
            "reading .mlpackage files needs the 'protobuf' package", 'Install it with: pip install "edgekit[coreml-emulator]"'
        ) from None
    if _PRIVATE not in sys.modules:
        package = types.ModuleType(_PRIVATE)
        package.__path__ = [str(_proto_dir())]  # the generated files import each other relatively
        sys.modules[_PRIVATE] = package
    return importlib.import_module(f"{_PRIVATE}.Model_pb2")


def mil_pb2() -> Any:
    """The ``MIL_pb2`` module (``Program``, ``Operation``, ``Value``, ``DataType``)."""
    model_pb2()
    if "coremltools.proto.MIL_pb2" in sys.modules:
        return sys.modules["coremltools.proto.MIL_pb2"]
    return importlib.import_module(f"{_PRIVATE}.MIL_pb2")
