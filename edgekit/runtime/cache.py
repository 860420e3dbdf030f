"""A bounded LRU cache of model outputs, keyed by the artifact and the input digest."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np


class OutputCache:
    """At most ``max_entries`` outputs, least recently used evicted first; thread-safe.

    Keys hold the artifact's sha256 beside the input digest, so outputs of
    one version are never served for another; ``clear`` empties it when the
    store's versions change anyway (a promote, an abort, an install). Outputs
    are stored read-only and handed out as copies, so a caller that edits its
    result cannot change what the next hit returns.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("an output cache holds at least one entry")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], list[np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, artifact_sha256: str, digest: str) -> list[np.ndarray] | None:
        """The cached outputs (copies), or None; counts a hit or a miss."""
        with self._lock:
            found = self._entries.get((artifact_sha256, digest))
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end((artifact_sha256, digest))
            self.hits += 1
            return [array.copy() for array in found]

    def put(self, artifact_sha256: str, digest: str, outputs: list[np.ndarray]) -> None:
        """Remember ``outputs`` (copied) for this artifact and input digest."""
        kept = []
        for array in outputs:
            frozen = np.array(array, copy=True)
            frozen.flags.writeable = False
            kept.append(frozen)
        with self._lock:
            self._entries[(artifact_sha256, digest)] = kept
            self._entries.move_to_end((artifact_sha256, digest))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1

    def clear(self) -> None:
        """Forget every entry (the counters stay: they describe the whole run)."""
        with self._lock:
            self._entries.clear()

    def stats(self) -> dict[str, float]:
        """Entries, hits, misses, evictions and the hit rate (hits over lookups; 0 before any lookup)."""
        with self._lock:
            lookups = self.hits + self.misses
            return {"entries": len(self._entries), "max_entries": self.max_entries, "hits": self.hits,
                    "misses": self.misses, "evictions": self.evictions,
                    "hit_rate": self.hits / lookups if lookups else 0.0}
