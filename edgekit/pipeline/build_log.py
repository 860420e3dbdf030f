"""``OUT/build.json``: how a build was made, beside (never inside) its manifest.

Which candidate sets came from the cache and which were built, on which
executor, and the cache's counts. A release records what was built, not how
fast the cache made it, so none of this enters ``manifest.json``: two builds
of the same inputs, cold and from the cache, give the same manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.artifact import atomic_write_bytes

BUILD_LOG = "build.json"


def build_log(candidates: Any, cache: Any, seconds: float | None = None) -> dict[str, Any]:
    """The log document: per candidate set (by its request key) its origin, plus executor and cache facts,
    the build's wall time and the share of it the attack suite took (crafting and runs)."""
    sets = []
    for key, origin in sorted(candidates.origins.items()):
        facts = json.loads(key)
        sets.append({"request": facts["request"], "model": facts["model"], "origin": origin,
                     "candidates": len(candidates.sets[key].artifacts)})
    stats = getattr(cache, "stats", None)
    return {
        "executor": {"name": candidates.executor.name, "workers": candidates.executor.workers},
        "cache": {"root": str(getattr(cache, "root", "")) or None,
                  "stats": stats.as_dict() if hasattr(stats, "as_dict") else None},
        "from_cache": sum(1 for s in sets if s["origin"] == "cache"),
        "built": sum(1 for s in sets if s["origin"] == "built"),
        "sets": sets,
        "seconds": seconds,
        "attacks_seconds": _attack_seconds(candidates),
    }


def _attack_seconds(candidates: Any) -> dict[str, float] | None:
    suite = candidates.prepared.attacks
    if suite is None:
        return None
    return {"craft": round(suite.craft_seconds, 3), "runs": round(candidates.attack_seconds, 3),
            "artifacts": len(candidates.attack_records)}


def write_build_log(output: Path, candidates: Any, cache: Any, seconds: float | None = None) -> dict[str, Any]:
    """Write ``OUT/build.json`` (atomically) and return it."""
    document = build_log(candidates, cache, seconds)
    atomic_write_bytes(output / BUILD_LOG, json.dumps(document, indent=2, sort_keys=True).encode())
    return document
