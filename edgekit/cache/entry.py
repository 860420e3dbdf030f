"""The on-disk format of one cache entry: checked names, ``entry.json``, and files copied in and out.

An entry folder holds ``entry.json`` (``{"format", "kind", "key", "names",
"items", "record"}`` as canonical JSON) and ``files/`` with the entry's files
and folders; every file item records its size and sha256. ``write_entry``
builds a complete, fsync'd folder for publishing. ``read_meta`` returns a
record only when it is well formed for its ``(kind, key)`` and every path in
it stays inside the entry; ``copy_out`` verifies each file against the
record while it copies, so a damaged entry raises ``Damaged`` (or
``ReadError`` for a file that vanished) and never half-fills a destination.
Bad names, kinds, keys and records raise ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgekit.artifact import write_durable
from edgekit.cache.files import copy_file, fsync_dirs, move_into, walk_source

ENTRY_FORMAT = 1

_ENTRY_JSON = "entry.json"
_FILES = "files"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


class Damaged(Exception):
    """A cache entry whose files do not match its record."""


def check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(
            f"cache {what} must be 1-128 letters, digits, '.', '_' or '-' not starting with a symbol, "
            f"not {value!r}"
        )


def _check_name(name: object) -> tuple[str, ...]:
    """The parts of a relative name, or ValueError."""
    if not isinstance(name, str) or not name or "\x00" in name or name.startswith("/"):
        raise ValueError(f"cache file names must be non-empty relative paths, not {name!r}")
    parts = tuple(name.split("/"))
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"cache file name {name!r} has an empty, '.' or '..' part")
    return parts


def check_names(files: Mapping[str, Path]) -> None:
    """Every name valid, and none inside another (its copy would land in the other's folder)."""
    seen = {_check_name(name) for name in files}
    for parts in seen:
        for end in range(1, len(parts)):
            if parts[:end] in seen:
                raise ValueError(f"cache file name {'/'.join(parts)!r} lies inside {'/'.join(parts[:end])!r}")


def _canonical_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def record_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``record`` as parsed JSON; TypeError/ValueError when it is not JSON data."""
    if not isinstance(record, Mapping):
        raise TypeError(f"a cache record must be a mapping, not {type(record).__name__}")
    return json.loads(_canonical_json(dict(record)))


# --------------------------------------------------------------------------- reading


def read_meta(entry: Path, kind: str, key: str) -> dict[str, Any] | None:
    """The entry's ``entry.json``, or None when it is missing or not well formed."""
    try:
        meta = json.loads((entry / _ENTRY_JSON).read_bytes())
    except (OSError, ValueError):
        return None
    return meta if _well_formed(meta, kind, key) else None


def _well_formed(meta: Any, kind: str, key: str) -> bool:
    """Whether ``meta`` is an entry record for ``(kind, key)`` whose paths all stay inside the entry."""
    if not isinstance(meta, dict) or meta.get("format") != ENTRY_FORMAT:
        return False
    if meta.get("kind") != kind or meta.get("key") != key or not isinstance(meta.get("record"), dict):
        return False
    names, items = meta.get("names"), meta.get("items")
    if not isinstance(names, list) or not isinstance(items, list):
        return False
    try:
        for name in names:
            _check_name(name)
        if not all(_well_formed_item(item) for item in items):
            return False
    except ValueError:
        return False
    return _consistent_tree([item["path"] for item in items], {item["path"] for item in items
                                                               if item["type"] == "file"}, names)


def _consistent_tree(paths: list[str], file_paths: set[str], names: list[str]) -> bool:
    """No path twice, nothing inside a file, every name present: copying the items cannot collide."""
    if len(set(paths)) != len(paths) or not set(names) <= set(paths):
        return False
    for path in paths:
        parts = path.split("/")
        if any("/".join(parts[:end]) in file_paths for end in range(1, len(parts))):
            return False
    return True


def _well_formed_item(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    _check_name(item.get("path"))
    if item.get("type") == "dir":
        return True
    size, sha = item.get("size"), item.get("sha256")
    return (item.get("type") == "file" and isinstance(size, int) and size >= 0
            and isinstance(sha, str) and _SHA256.match(sha) is not None)


def copy_out(entry: Path, meta: dict[str, Any], destination: Path) -> None:
    """Copy and verify an entry's items into a hidden folder in ``destination``, then move them in.

    Nothing reaches ``destination`` unless every item matched its record, so
    a miss leaves no partial files behind.
    """
    files = entry / _FILES
    destination.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".edgekit-cache-", dir=destination))
    try:
        for item in meta["items"]:
            source, target = files / item["path"], stage / item["path"]
            if item["type"] == "dir":
                if not source.is_dir():
                    raise Damaged(item["path"])
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if copy_file(source, target, sync=False) != (item["size"], item["sha256"]):
                raise Damaged(item["path"])
        for name in meta["names"]:
            if not os.path.lexists(stage / name):
                raise Damaged(name)
        for name in meta["names"]:
            move_into(stage / name, destination / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# --------------------------------------------------------------------------- writing


def write_entry(staged: Path, kind: str, key: str, files: Mapping[str, Path], record: dict[str, Any]) -> None:
    """Build the complete entry folder ``staged`` (files, then ``entry.json``), fsync'd and ready to publish."""
    items = []
    (staged / _FILES).mkdir(parents=True)  # also for record-only entries
    for name in sorted(files):
        items.extend(_copy_in(Path(files[name]), staged / _FILES, name))
    meta = {"format": ENTRY_FORMAT, "kind": kind, "key": key, "names": sorted(files),
            "items": items, "record": record}
    write_durable(staged / _ENTRY_JSON, _canonical_json(meta))
    fsync_dirs(staged)


def _copy_in(source: Path, files: Path, name: str) -> list[dict[str, Any]]:
    """Copy ``source`` (file or folder) to ``files/name``, fsync'ing files; return the item records."""
    items: list[dict[str, Any]] = []
    for rel, path, is_dir in walk_source(source, name):
        destination = files / rel
        if is_dir:
            destination.mkdir(parents=True, exist_ok=True)
            items.append({"path": rel, "type": "dir"})
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        size, sha = copy_file(path, destination, sync=True)
        items.append({"path": rel, "type": "file", "size": size, "sha256": sha})
    return items
