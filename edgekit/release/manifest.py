"""The build manifest: what was built, from what, and whether it met its budgets.

The manifest is canonical JSON (sorted keys, no insignificant whitespace,
UTF-8) so that its hash, and a signature over it, are stable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.artifact import atomic_write_bytes

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def canonical_bytes(document: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, ``,``/``:`` separators, UTF-8, no NaN."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` canonically and atomically as ``folder/manifest.json``."""
    path = folder / MANIFEST_NAME
    atomic_write_bytes(path, canonical_bytes(manifest))
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest file (no schema check here; see the release module for that)."""
    return json.loads(path.read_text(encoding="utf-8"))
