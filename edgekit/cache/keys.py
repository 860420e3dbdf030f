"""Cache keys: ``cache_key`` hashes the canonical JSON of what determines a result; ``path_digest`` hashes files.

Both return sha256 hex digests. ``cache_key`` never ``str()``-s a value: one
without a canonical form (an unknown type, a NaN) raises, so two different
inputs cannot silently share a key. Numpy is never imported here: arrays are
recognised only when the caller has imported numpy already.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from edgekit.cache.files import CHUNK, ReadError, walk_source

_TAG = "\x00"  # prefix of the keys that mark non-JSON values in cache_key; user keys may not start with it


def cache_key(*parts: Any) -> str:
    """The sha256 hex digest of the canonical JSON of ``parts``.

    Canonical: sorted keys, no whitespace, UTF-8. Accepted values: None, bool,
    int, finite float, str, lists and tuples (the same key for both), mappings
    with str keys, ``PurePath`` (keys by its text, not its content: hash files
    with ``path_digest``), bytes-like (by sha256 of the bytes), numpy arrays
    (by dtype, shape and bytes) and numpy scalars (by value). Anything else
    raises ``TypeError``; NaN and infinities raise ``ValueError``. Nothing is
    ever ``str()``-ed, so two different objects cannot silently share a key.
    """
    text = json.dumps(
        [_canonical(part) for part in parts],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value: Any) -> Any:
    """``value`` as plain JSON data, with tagged forms for paths, bytes and arrays."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cache_key: {value!r} has no canonical form; use a finite number or a string")
        return value
    if isinstance(value, Mapping):
        return _canonical_mapping(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, PurePath):
        return {_TAG + "path": value.as_posix()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_TAG + "bytes": hashlib.sha256(value).hexdigest()}
    numpy_form = _canonical_numpy(value)
    if numpy_form is not None:
        return numpy_form
    raise TypeError(
        f"cache_key cannot hash a {type(value).__module__}.{type(value).__qualname__}; "
        "pass JSON data, a Path, bytes or a numpy array (convert other objects explicitly)"
    )


def _canonical_mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    out = {}
    for key, item in value.items():
        # JSON would turn 1 and "1" into the same key: refuse non-str keys instead.
        if not isinstance(key, str):
            raise TypeError(f"cache_key: mapping keys must be str, not {type(key).__name__} ({key!r})")
        if key.startswith(_TAG):
            raise ValueError("cache_key: mapping keys may not start with NUL (reserved for tagged values)")
        out[key] = _canonical(item)
    return out


def _canonical_numpy(value: Any) -> Any:
    """The tagged form of a numpy array or scalar, or None when ``value`` is not one."""
    numpy = sys.modules.get("numpy")  # if numpy was never imported, nothing here is a numpy value
    if numpy is None:
        return None
    if isinstance(value, numpy.ndarray):
        if value.dtype.hasobject or value.dtype.fields is not None:
            raise TypeError(f"cache_key: cannot hash a numpy array of dtype {value.dtype} (objects or fields)")
        digest = hashlib.sha256(value.tobytes(order="C")).hexdigest()
        return {_TAG + "ndarray": {"dtype": value.dtype.str, "shape": list(value.shape), "sha256": digest}}
    if isinstance(value, numpy.generic):
        return _canonical(value.item())  # a config value, keyed like the equal Python scalar
    return None


def path_digest(path: Path) -> str:
    """sha256 hex of a file's bytes, or of a folder's tree (relative names, kinds and file digests).

    Folders may hold only regular files and folders (``ValueError`` otherwise).
    """
    path = Path(path)
    if path.is_file():
        return _file_sha256(path)
    try:
        tree = [[rel, None if is_dir else _file_sha256(source)] for rel, source, is_dir in walk_source(path, "")]
    except ReadError as exc:
        raise exc.error from None
    return hashlib.sha256(json.dumps(tree, separators=(",", ":")).encode("utf-8")).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
