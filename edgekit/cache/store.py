"""The cache objects the build uses: the ``Cache`` interface, its per-kind stats, ``NullCache`` and ``BuildCache``.

``BuildCache`` keeps entries in a local folder with the layout and the
concurrency contract described in ``edgekit.cache``; ``NullCache`` stores
nothing but checks its arguments the same way. Cache damage is never an
error (a damaged entry is a miss); an unusable cache folder raises
``OutputError`` naming ``--cache DIR`` and ``--no-cache`` as the fixes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgekit.cache.entry import (
    Damaged,
    check_id,
    check_names,
    copy_out,
    read_meta,
    record_json,
    write_entry,
)
from edgekit.cache.files import ReadError, inode, list_entries, mark_used
from edgekit.cache.publish import publish, staging
from edgekit.cache.removal import clear_root, discard, evict_lru
from edgekit.errors import OutputError

DEFAULT_MAX_BYTES = 5 * 1024**3

_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file marks the edgekit build cache; backup tools may skip this folder.\n"
)
_CACHE_FIX = "Pass --cache DIR with a folder you can write to, or --no-cache to build without a cache"


# --------------------------------------------------------------------------- stats


@dataclass
class KindStats:
    """What one kind of stage result did in this process: served, missing, stored."""

    hits: int = 0
    misses: int = 0
    puts: int = 0


@dataclass
class CacheStats:
    """Per-kind counters of one cache object (this process only; not shared between processes)."""

    kinds: dict[str, KindStats] = field(default_factory=dict)

    def count(self, kind: str, event: str) -> None:
        """Add one ``event`` ("hits", "misses" or "puts") for ``kind``."""
        counters = self.kinds.setdefault(kind, KindStats())
        setattr(counters, event, getattr(counters, event) + 1)

    def for_kind(self, kind: str) -> KindStats:
        """The counters of ``kind`` (zeros when it was never used)."""
        return self.kinds.get(kind, KindStats())

    def total(self) -> KindStats:
        """The counters summed over all kinds."""
        return KindStats(
            hits=sum(k.hits for k in self.kinds.values()),
            misses=sum(k.misses for k in self.kinds.values()),
            puts=sum(k.puts for k in self.kinds.values()),
        )

    def as_dict(self) -> dict[str, dict[str, int]]:
        """``{kind: {"hits": n, "misses": n, "puts": n}}``, sorted by kind, for reports."""
        return {kind: vars(counters).copy() for kind, counters in sorted(self.kinds.items())}


# --------------------------------------------------------------------------- interface


class Cache(Protocol):
    """What the build pipeline needs from a cache; ``BuildCache`` and ``NullCache`` provide it."""

    stats: CacheStats

    def get(self, kind: str, key: str, destination: Path) -> dict[str, Any] | None: ...

    def put(self, kind: str, key: str, files: Mapping[str, Path], record: Mapping[str, Any]) -> None: ...

    def contains(self, kind: str, key: str) -> bool: ...

    def evict(self, max_bytes: int | None = None) -> int: ...

    def size_bytes(self) -> int: ...

    def clear(self) -> None: ...


class NullCache:
    """A cache that stores nothing and never hits (``--no-cache``).

    It checks its arguments like ``BuildCache`` so that a wrong call fails the
    same way with and without a cache. ``get`` counts a miss; ``put`` counts
    nothing, since nothing was stored.
    """

    root: Path | None = None
    max_bytes: int = 0

    def __init__(self) -> None:
        self.stats = CacheStats()

    def get(self, kind: str, key: str, destination: Path) -> dict[str, Any] | None:
        """Always a miss."""
        check_id(kind, "kind")
        check_id(key, "key")
        self.stats.count(kind, "misses")
        return None

    def put(self, kind: str, key: str, files: Mapping[str, Path], record: Mapping[str, Any]) -> None:
        """Check the arguments, store nothing."""
        check_id(kind, "kind")
        check_id(key, "key")
        check_names(files)
        record_json(record)

    def contains(self, kind: str, key: str) -> bool:
        """Always False."""
        return False

    def evict(self, max_bytes: int | None = None) -> int:
        """Nothing to evict: 0 bytes freed."""
        return 0

    def size_bytes(self) -> int:
        """Always 0."""
        return 0

    def clear(self) -> None:
        """Nothing to clear."""


# --------------------------------------------------------------------------- the cache


class BuildCache:
    """A size-bounded, content-addressed store of stage results in a local folder.

    ``root`` is created on construction; a root that cannot be written raises
    ``OutputError`` (the CLI's ``--cache DIR`` / ``--no-cache`` are the fixes).
    After every put, least-recently-used entries are evicted until the total
    size of all entries is at most ``max_bytes`` (an entry larger than
    ``max_bytes`` on its own is therefore evicted at once). Safe to share
    between processes on one host; see the ``edgekit.cache`` docstring for
    the contract.
    """

    def __init__(self, root: Path | str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative int, not {max_bytes!r}")
        self.root = (Path(root).expanduser() if root is not None else self.default_root()).absolute()
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._prepare_root()

    @staticmethod
    def default_root() -> Path:
        """``$EDGEKIT_CACHE`` if set, else ``$XDG_CACHE_HOME/edgekit``, else ``~/.cache/edgekit``."""
        explicit = os.environ.get("EDGEKIT_CACHE")
        if explicit:
            return Path(explicit).expanduser()
        xdg = os.environ.get("XDG_CACHE_HOME")
        if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore a relative value
            return Path(xdg) / "edgekit"
        return Path.home() / ".cache" / "edgekit"

    def _prepare_root(self) -> None:
        """Create the layout and prove it writable, or raise OutputError."""
        try:
            for name in ("entries", "staging", "trash"):
                (self.root / name).mkdir(parents=True, exist_ok=True)
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                tag.write_text(_CACHEDIR_TAG, encoding="utf-8")
            with tempfile.NamedTemporaryFile(dir=self.root / "staging", prefix="probe-"):
                pass
            os.close(os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644))
        except OSError as exc:
            raise OutputError(f"cannot use {self.root} as the build cache: {exc.strerror or exc}", _CACHE_FIX) from None

    def _entry(self, kind: str, key: str) -> Path:
        check_id(kind, "kind")
        check_id(key, "key")
        return self.root / "entries" / kind / key

    # ----------------------------------------------------------------- reading

    def get(self, kind: str, key: str, destination: Path) -> dict[str, Any] | None:
        """Copy entry ``(kind, key)``'s files into ``destination`` and return its record, or None.

        ``destination`` is created; names the entry holds replace what
        ``destination`` had under those names, other names are left alone.
        A miss adds no files to ``destination``. A damaged entry (record
        missing or garbled, a file missing or changed) is removed and is a
        miss; an entry evicted while it is copied is a miss. Cache damage never
        raises; failing to write ``destination`` raises ``OutputError``. A hit
        marks the entry as used (for LRU eviction).
        """
        entry = self._entry(kind, key)
        destination = Path(destination)
        try:
            record = self._read_into(entry, kind, key, destination)
        except OSError as exc:  # cache-side failures are all handled inside: this is the destination
            raise OutputError(
                f"cannot write cached files into {destination}: {exc.strerror or exc}",
                "Free disk space or choose an output folder you can write to",
            ) from None
        self.stats.count(kind, "hits" if record is not None else "misses")
        return record

    def _read_into(self, entry: Path, kind: str, key: str, destination: Path) -> dict[str, Any] | None:
        entry_inode = inode(entry)
        if entry_inode is None:
            return None
        meta = read_meta(entry, kind, key)
        if meta is None:
            discard(self.root, entry, entry_inode)
            return None
        try:
            copy_out(entry, meta, destination)
        except (ReadError, Damaged):
            # Either evicted under us (the inode check then leaves the path alone) or truly damaged.
            discard(self.root, entry, entry_inode)
            return None
        mark_used(entry)
        return meta["record"]

    def contains(self, kind: str, key: str) -> bool:
        """Whether a well-formed entry is published under ``(kind, key)``.

        Reads only its record (files are checked by ``get``); does not mark it
        used or count in ``stats``. A True answer can turn stale at once.
        """
        entry = self._entry(kind, key)
        return read_meta(entry, kind, key) is not None

    # ----------------------------------------------------------------- writing

    def put(self, kind: str, key: str, files: Mapping[str, Path], record: Mapping[str, Any]) -> None:
        """Store ``files`` and ``record`` under ``(kind, key)``, then evict down to ``max_bytes``.

        ``files`` maps relative names (``a.tflite``, ``sub/b.bin``; no ``..``,
        ``.``, empty parts or leading ``/``, and no name inside another) to
        files or folders, copied recursively (contents only; folders may hold
        only regular files and folders). ``record`` must be JSON data (a
        mapping). The entry becomes visible complete or not at all. When the
        key is already published, nothing is copied: equal keys mean equal
        content. Bad arguments raise ``ValueError``/``TypeError``, an
        unreadable source its ``OSError``, an unwritable cache ``OutputError``.
        """
        entry = self._entry(kind, key)
        check_names(files)
        record = record_json(record)
        try:
            if read_meta(entry, kind, key) is not None:
                mark_used(entry)
            else:
                self._stage_and_publish(entry, kind, key, files, record)
            self.stats.count(kind, "puts")
            self.evict()
        except ReadError as exc:
            raise exc.error from None
        except OSError as exc:
            raise OutputError(f"cannot write to the build cache {self.root}: {exc.strerror or exc}",
                              _CACHE_FIX) from None

    def _stage_and_publish(self, entry: Path, kind: str, key: str, files: Mapping[str, Path],
                           record: dict[str, Any]) -> None:
        with staging(self.root) as stage:
            staged = stage / "entry"
            write_entry(staged, kind, key, files, record)
            publish(self.root, staged, entry, kind, key)

    # ----------------------------------------------------------------- removing

    def evict(self, max_bytes: int | None = None) -> int:
        """Sweep leftovers, then remove least-recently-used entries until the total is at most the limit.

        The limit is ``max_bytes`` if given, else ``self.max_bytes``. Leftovers
        are staging folders of puts whose process died and trash not yet
        deleted. Returns the bytes of entries removed. Ties in last use go to
        the name, so the order is deterministic.
        """
        limit = self.max_bytes if max_bytes is None else max_bytes
        return evict_lru(self.root, limit)

    def size_bytes(self) -> int:
        """Total size of the files of all published entries (staging and trash not counted)."""
        return sum(size for _, _, size in list_entries(self.root / "entries"))

    def clear(self) -> None:
        """Remove every entry and leftover. Readers racing it see misses; running puts still publish."""
        clear_root(self.root)
