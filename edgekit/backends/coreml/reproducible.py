"""Make a saved ``.mlpackage`` byte-identical whenever its content is: rewritten in place right after saving.

coremltools 9.0 leaves three sources of byte variation in a package it saves
(measured by building the same candidate twice, in one process and in two;
docs/reproducibility.md has the evidence):

- ``Manifest.json`` names each item (the model spec, the weights folder) by
  a random UUID (``uuid_generate`` in coremltools' C++ ModelPackage), and
  ``rootModelIdentifier`` repeats the spec's. Here every identifier becomes a
  name-based UUID of the item's path and the sha256 of its bytes, so equal
  packages get equal identifiers and different ones still get distinct ones.
  The file keeps coremltools' layout (4-space indent, sorted keys, a final
  newline, as nlohmann::json writes it).
- ``model.mlmodel`` is written with protobuf's default map order, which
  varies between processes (the user-defined metadata map, and the maps of
  an ML Program: functions, attributes, op inputs). It is written again with
  ``deterministic=True``: map entries sorted by key. The parsed message is
  unchanged.
- The user-defined metadata records the conversion day
  (``com.github.apple.coremltools.conversion_date``, ``date.today()``), so a
  rebuild on another day differs. It is removed: nothing reads it (Core ML
  shows metadata, it does not act on it), and the build manifest records
  when a build ran. The other ``com.github.apple.coremltools.*`` entries
  (source framework and version, coremltools version, source dialect) stay:
  they depend only on the tools, which a build manifest records anyway.

Everything else coremltools writes (``weights/weight.bin``, the
``executorch_debug_handle_mapping.json`` beside the manifest) was identical
across builds and is left alone.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

MANIFEST = "Manifest.json"
CONVERSION_DATE = "com.github.apple.coremltools.conversion_date"
# Name-based identifiers live in their own namespace, so they never equal a UUID made for anything else.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://edgekit.invalid/coreml/package-item")


def normalise_package(package: Path) -> None:
    """Rewrite ``package``'s model spec, then its manifest, so that equal content gives equal bytes.

    Contract: the package loads and runs exactly as before (the same
    protobuf message apart from the conversion date, the same items at the
    same paths, the root model still the spec); applying it again changes
    nothing.
    """
    manifest = json.loads((package / MANIFEST).read_text(encoding="utf-8"))
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    _normalise_spec(package / "Data" / root["path"])
    normalise_manifest(package)  # last: the identifiers hash the final bytes


def normalise_manifest(package: Path) -> None:
    """Replace every item identifier in ``package``'s Manifest.json by ``item_identifier`` of the item.

    The JSON keeps coremltools' layout: 4-space indent, sorted keys, a final newline.
    """
    path = package / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    entries = manifest["itemInfoEntries"]
    renamed = {old: item_identifier(package / "Data" / entry["path"], entry["path"]) for old, entry in entries.items()}
    manifest["itemInfoEntries"] = {renamed[old]: entry for old, entry in entries.items()}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n", encoding="utf-8")


def _normalise_spec(path: Path) -> None:
    """Drop the conversion date and write the spec with its maps sorted."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    user_defined = spec.description.metadata.userDefined
    if CONVERSION_DATE in user_defined:
        del user_defined[CONVERSION_DATE]
    path.write_bytes(spec.SerializeToString(deterministic=True))


def item_identifier(item: Path, relative: str) -> str:
    """A lowercase UUID (as coremltools writes them) named by the item's path and the sha256 of its bytes.

    A folder item (the weights) hashes each file's relative path and bytes, in sorted order.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
    for file in files:
        name = file.relative_to(item).as_posix() if item.is_dir() else ""
        with file.open("rb") as handle:
            content = hashlib.file_digest(handle, "sha256").hexdigest()
        digest.update(f"{name}\0{content}\0".encode())
    return str(uuid.uuid5(NAMESPACE, f"{relative}\0{digest.hexdigest()}"))
