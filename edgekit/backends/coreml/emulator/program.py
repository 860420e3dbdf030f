"""A saved ``.mlpackage`` parsed into plain Python objects.

``load_package(path)`` reads ``Manifest.json`` to find the root model, parses
``model.mlmodel`` (an ML Program) and resolves every constant, including
blob-file weights, into numpy arrays. Nothing here executes ops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.coreml.emulator import proto
from edgekit.backends.coreml.emulator.blob import BlobFile
from edgekit.backends.coreml.emulator.values import TensorType, decode, tensor_type
from edgekit.errors import ArtifactError, UnsupportedModelError

# Core ML specification version -> the OS that introduced it (for reports).
SPEC_VERSION_OS = {6: "iOS 15", 7: "iOS 16", 8: "iOS 17", 9: "iOS 18", 10: "iOS 26"}
OPSET_OS = {"CoreML5": "iOS 15", "CoreML6": "iOS 16", "CoreML7": "iOS 17", "CoreML8": "iOS 18", "CoreML9": "iOS 26"}


@dataclass(frozen=True)
class Argument:
    """One argument of an op input: a reference to a named value, or an inline constant."""

    name: str | None
    value: Any = None
    dtype: str | None = None  # declared MIL dtype of an inline value (int4 is held in int8 arrays)


@dataclass(frozen=True)
class Operation:
    """One MIL op. ``inputs`` maps a parameter to its arguments (several for variadic ones like concat).

    ``attributes`` holds decoded op attributes (iOS 16/17 constexpr ops keep
    their parameters there); ``position`` is the op's index in its block.
    """

    type: str
    name: str
    inputs: dict[str, tuple[Argument, ...]]
    attributes: dict[str, Any]
    outputs: tuple[tuple[str, TensorType], ...]
    position: int
    has_blocks: bool = False
    attribute_types: dict[str, str] = field(default_factory=dict)

    def where(self, function: str) -> str:
        return f"op #{self.position} '{self.name}' ({self.type}) in function '{function}'"


@dataclass(frozen=True)
class Function:
    name: str
    opset: str
    inputs: tuple[tuple[str, TensorType], ...]
    operations: tuple[Operation, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class FeatureSpec:
    """A model input or output as the model description declares it.

    ``shape`` is the default shape; ``ranges`` the (lower, upper) bounds per
    dimension when the shape is flexible (upper -1 = unbounded).
    ``enumerated`` lists allowed shapes for enumerated-shape models.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    ranges: tuple[tuple[int, int], ...] = ()
    enumerated: tuple[tuple[int, ...], ...] = ()


@dataclass
class Package:
    """A parsed ``.mlpackage``: description, ML Program functions and its files."""

    path: Path
    spec_version: int
    inputs: tuple[FeatureSpec, ...]
    outputs: tuple[FeatureSpec, ...]
    functions: dict[str, Function]
    metadata: dict[str, str] = field(default_factory=dict)
    program_attributes: dict[str, Any] = field(default_factory=dict)
    model_file: Path = Path()

    @property
    def main(self) -> Function:
        return self.functions["main"] if "main" in self.functions else next(iter(self.functions.values()))

    @property
    def deployment_target(self) -> str:
        return OPSET_OS.get(self.main.opset, SPEC_VERSION_OS.get(self.spec_version, f"spec {self.spec_version}"))


# Model.proto ArrayFeatureType.ArrayDataType -> numpy dtype names.
_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}


def _feature(desc: Any) -> FeatureSpec:
    kind = desc.type.WhichOneof("Type")
    if kind != "multiArrayType":
        raise UnsupportedModelError(
            f"model feature '{desc.name}' is a {kind}; the Core ML emulator supports multi-array features only",
            "Convert with ct.TensorType inputs and outputs (not images)",
        )
    array = desc.type.multiArrayType
    dtype = _ARRAY_DTYPES.get(array.dataType, f"arraytype#{array.dataType}")
    ranges: tuple[tuple[int, int], ...] = ()
    enumerated: tuple[tuple[int, ...], ...] = ()
    if array.WhichOneof("ShapeFlexibility") == "shapeRange":
        ranges = tuple((int(r.lowerBound), int(r.upperBound)) for r in array.shapeRange.sizeRanges)
    elif array.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
        enumerated = tuple(tuple(int(d) for d in s.shape) for s in array.enumeratedShapes.shapes)
    return FeatureSpec(desc.name, dtype, tuple(int(d) for d in array.shape), ranges, enumerated)


def _model_file(path: Path) -> Path:
    """The root model file of a package, as its Manifest.json names it."""
    manifest = path / "Manifest.json"
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
        entry = info["itemInfoEntries"][info["rootModelIdentifier"]]
        return path / "Data" / entry["path"]
    except FileNotFoundError:
        raise ArtifactError(f"{path.name} has no Manifest.json", "Give a complete .mlpackage folder") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"{path.name}/Manifest.json is unreadable or names no root model ({type(exc).__name__})",
            "Rebuild the .mlpackage",
        ) from None


class _Blobs:
    """Opens weight files on first use; ``@model_path`` is the model file's folder."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._files: dict[str, BlobFile] = {}

    def __call__(self, file_name: str, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        if file_name not in self._files:
            relative = file_name.replace("@model_path/", "", 1)
            resolved = (self.model_dir / relative).resolve()
            if self.model_dir.resolve() not in resolved.parents:
                raise ArtifactError(f"weight file {file_name} points outside the package", "Rebuild the artifact")
            self._files[file_name] = BlobFile(resolved)
        return self._files[file_name].read(offset, dtype, shape)


def _arguments(binding: Any, blobs: _Blobs) -> tuple[Argument, ...]:
    args = []
    for arg in binding.arguments:
        if arg.WhichOneof("binding") == "name":
            args.append(Argument(arg.name))
        else:
            args.append(Argument(None, decode(arg.value, blobs), tensor_type(arg.value.type).dtype))
    return tuple(args)


def _operation(op: Any, position: int, blobs: _Blobs) -> Operation:
    attributes = {key: decode(value, blobs) for key, value in op.attributes.items()}
    attribute_types = {key: tensor_type(value.type).dtype for key, value in op.attributes.items()}
    name = attributes.get("name")
    outputs = tuple((o.name, tensor_type(o.type)) for o in op.outputs)
    return Operation(
        type=op.type,
        name=str(name) if isinstance(name, str) else (outputs[0][0] if outputs else f"op{position}"),
        inputs={key: _arguments(binding, blobs) for key, binding in op.inputs.items()},
        attributes=attributes,
        attribute_types=attribute_types,
        outputs=outputs,
        position=position,
        has_blocks=len(op.blocks) > 0,
    )


def _function(name: str, fn: Any, blobs: _Blobs) -> Function:
    opset = fn.opset
    block = fn.block_specializations.get(opset) or next(iter(fn.block_specializations.values()))
    return Function(
        name=name,
        opset=opset,
        inputs=tuple((i.name, tensor_type(i.type)) for i in fn.inputs),
        operations=tuple(_operation(op, i, blobs) for i, op in enumerate(block.operations)),
        outputs=tuple(block.outputs),
    )


def load_package(path: Path) -> Package:
    """Parse a ``.mlpackage`` folder (or a bare ``.mlmodel`` ML Program file)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"Core ML model not found: {path}", "Check the path")
    model_file = _model_file(path) if path.is_dir() else path
    try:
        data = model_file.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read {model_file}: {exc.strerror or exc}", "Check the .mlpackage is complete") from None
    spec = proto.model_pb2().Model()
    try:
        spec.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ArtifactError(
            f"{path.name} does not hold a Core ML model ({type(exc).__name__})", "Rebuild the artifact"
        ) from None
    if spec.WhichOneof("Type") != "mlProgram":
        kind = spec.WhichOneof("Type") or "nothing"
        raise UnsupportedModelError(
            f"{path.name} is a Core ML '{kind}' model; the emulator runs ML Programs only",
            'Convert with convert_to="mlprogram"',
        )
    blobs = _Blobs(model_file.parent)
    program = spec.mlProgram
    functions = {name: _function(name, fn, blobs) for name, fn in program.functions.items()}
    if not functions:
        raise ArtifactError(f"{path.name} holds an ML Program with no functions", "Rebuild the artifact")
    attributes = {}
    for key, value in program.attributes.items():
        try:
            attributes[key] = decode(value, blobs)
        except ArtifactError:
            continue  # informational only
    return Package(
        path=path,
        spec_version=int(spec.specificationVersion),
        inputs=tuple(_feature(d) for d in spec.description.input),
        outputs=tuple(_feature(d) for d in spec.description.output),
        functions=functions,
        metadata=dict(spec.description.metadata.userDefined),
        program_attributes=attributes,
        model_file=model_file,
    )
