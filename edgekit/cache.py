"""A local, content-addressed cache of build stage results.

An entry is a set of files (regular files and folders, e.g. an ``.mlpackage``)
plus a JSON record, stored under a ``kind`` (the stage: "export",
"candidate", "measure", ...) and a ``key`` (``cache_key`` of everything that
determines the result: input hashes, stage config, tool versions). Equal keys
mean equal content, so whichever process publishes a key first wins and the
others discard their copy.

Layout under the root::

    CACHEDIR.TAG              tells backup tools to skip the folder
    lock                      flock'ed by eviction, clear() and damage removal
    entries/<kind>/<key>/     a published entry; its folder mtime is its last use
        entry.json            {"format", "kind", "key", "names", "items", "record"}
        files/<name>...       the entry's files and folders
    staging/<tmp>/            a put in progress, flock'ed by its process
    trash/<tmp>/              an entry on its way out

Concurrency contract (any number of processes on one host sharing a root):

- A put builds its entry under ``staging/``, fsyncs it and publishes it with
  one ``rename``: an entry is either absent or complete, never partial.
- Entries leave only by a ``rename`` into ``trash/`` under the root lock, so a
  reader copying an entry either finishes (files it has open stay readable
  after the rename) or meets a missing file and reports a miss. Every file is
  checked against its recorded size and sha256 while it is copied.
- Reads take no global lock. Eviction, ``clear()`` and removal of a damaged
  entry do, and only they remove anything.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Protocol

from edgekit.errors import OutputError

DEFAULT_MAX_BYTES = 5 * 1024**3
ENTRY_FORMAT = 1

_ENTRY_JSON = "entry.json"
_FILES = "files"
_TAG = "\x00"  # prefix of the keys that mark non-JSON values in cache_key; user keys may not start with it
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_CHUNK = 1 << 20
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file marks the edgekit build cache; backup tools may skip this folder.\n"
)
_CACHE_FIX = "Pass --cache DIR with a folder you can write to, or --no-cache to build without a cache"


# --------------------------------------------------------------------------- keys


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
        tree = [[rel, None if is_dir else _file_sha256(source)] for rel, source, is_dir in _walk_source(path, "")]
    except _ReadError as exc:
        raise exc.error from None
    return hashlib.sha256(json.dumps(tree, separators=(",", ":")).encode("utf-8")).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
        _check_id(kind, "kind")
        _check_id(key, "key")
        self.stats.count(kind, "misses")
        return None

    def put(self, kind: str, key: str, files: Mapping[str, Path], record: Mapping[str, Any]) -> None:
        """Check the arguments, store nothing."""
        _check_id(kind, "kind")
        _check_id(key, "key")
        _check_names(files)
        _record_json(record)

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
    between processes on one host; see the module docstring for the contract.
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
        _check_id(kind, "kind")
        _check_id(key, "key")
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
        inode = _inode(entry)
        if inode is None:
            return None
        meta = _read_meta(entry, kind, key)
        if meta is None:
            self._discard(entry, inode)
            return None
        try:
            _copy_out(entry / _FILES, meta, destination)
        except (_ReadError, _Damaged):
            # Either evicted under us (the inode check then leaves the path alone) or truly damaged.
            self._discard(entry, inode)
            return None
        _mark_used(entry)
        return meta["record"]

    def contains(self, kind: str, key: str) -> bool:
        """Whether a well-formed entry is published under ``(kind, key)``.

        Reads only its record (files are checked by ``get``); does not mark it
        used or count in ``stats``. A True answer can turn stale at once.
        """
        entry = self._entry(kind, key)
        return _read_meta(entry, kind, key) is not None

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
        _check_names(files)
        record = _record_json(record)
        try:
            if _read_meta(entry, kind, key) is not None:
                _mark_used(entry)
            else:
                self._stage_and_publish(entry, kind, key, files, record)
            self.stats.count(kind, "puts")
            self.evict()
        except _ReadError as exc:
            raise exc.error from None
        except OSError as exc:
            raise OutputError(f"cannot write to the build cache {self.root}: {exc.strerror or exc}",
                              _CACHE_FIX) from None

    def _stage_and_publish(self, entry: Path, kind: str, key: str, files: Mapping[str, Path],
                           record: dict[str, Any]) -> None:
        with self._staging() as stage:
            staged = stage / "entry"
            items = []
            (staged / _FILES).mkdir(parents=True)  # also for record-only entries
            for name in sorted(files):
                items.extend(_copy_in(Path(files[name]), staged / _FILES, name))
            meta = {"format": ENTRY_FORMAT, "kind": kind, "key": key, "names": sorted(files),
                    "items": items, "record": record}
            _write_synced(staged / _ENTRY_JSON, _canonical_json(meta))
            _fsync_dirs(staged)
            self._publish(staged, entry, kind, key)

    @contextmanager
    def _staging(self) -> Iterator[Path]:
        """A new folder under ``staging/``, flock'ed while it exists.

        The lock is how a sweep tells a live put from a dead one's leftovers,
        without guessing from ages.
        """
        parent = self.root / "staging"
        while True:
            parent.mkdir(parents=True, exist_ok=True)
            path = Path(tempfile.mkdtemp(dir=parent))
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _inode(path) == os.fstat(fd).st_ino:
                break
            os.close(fd)  # a sweep removed it between mkdtemp and flock: take another
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)

    def _publish(self, staged: Path, entry: Path, kind: str, key: str) -> None:
        """Rename ``staged`` to ``entry``; if another process published first, keep theirs."""
        for _ in range(3):
            entry.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staged, entry)
            except FileNotFoundError:
                continue  # clear() moved the kind folder away in between: make it again
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if _read_meta(entry, kind, key) is not None:
                    _mark_used(entry)
                    return  # the race was lost to an equal entry
                self._discard(entry, _inode(entry))  # a damaged leftover: replace it
                continue
            _fsync_dir(entry.parent)
            return
        # Still contended after three tries: storing is an optimisation, so give up quietly.

    # ----------------------------------------------------------------- removing

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the root's exclusive lock (released by closing the descriptor, also if the process dies)."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _discard(self, entry: Path, inode: int | None) -> None:
        """Remove ``entry`` if it is still the folder with ``inode`` (best effort, never raises)."""
        if inode is None:
            return
        try:
            with self._locked():
                if _inode(entry) == inode:
                    self._trash(entry)
        except OSError:
            pass  # removal is housekeeping; the caller reports a miss either way

    def _trash(self, path: Path) -> None:
        """Move ``path`` into ``trash/`` (readers then miss it) and delete it. Caller holds the lock."""
        trash = self.root / "trash"
        trash.mkdir(parents=True, exist_ok=True)
        grave = trash / uuid.uuid4().hex
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return
        shutil.rmtree(grave, ignore_errors=True)  # leftovers are swept by the next eviction

    def evict(self, max_bytes: int | None = None) -> int:
        """Sweep leftovers, then remove least-recently-used entries until the total is at most the limit.

        The limit is ``max_bytes`` if given, else ``self.max_bytes``. Leftovers
        are staging folders of puts whose process died and trash not yet
        deleted. Returns the bytes of entries removed. Ties in last use go to
        the name, so the order is deterministic.
        """
        limit = self.max_bytes if max_bytes is None else max_bytes
        freed = 0
        with self._locked():
            self._sweep()
            entries = sorted(_list_entries(self.root / "entries"))
            total = sum(size for _, _, size in entries)
            for _, path, size in entries:
                if total <= limit:
                    break
                self._trash(Path(path))
                total -= size
                freed += size
        return freed

    def _sweep(self) -> None:
        """Delete dead puts' staging folders (their lock is free) and all trash. Caller holds the lock."""
        for child in _children(self.root / "staging"):
            if not child.is_dir() or child.is_symlink():
                child.unlink(missing_ok=True)
                continue
            try:
                fd = os.open(child, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live put: leave it alone
            else:
                shutil.rmtree(child, ignore_errors=True)
            finally:
                os.close(fd)
        for child in _children(self.root / "trash"):
            shutil.rmtree(child, ignore_errors=True)

    def size_bytes(self) -> int:
        """Total size of the files of all published entries (staging and trash not counted)."""
        return sum(size for _, _, size in _list_entries(self.root / "entries"))

    def clear(self) -> None:
        """Remove every entry and leftover. Readers racing it see misses; running puts still publish."""
        with self._locked():
            self._trash(self.root / "entries")
            (self.root / "entries").mkdir(exist_ok=True)
            self._sweep()


# --------------------------------------------------------------------------- helpers


class _ReadError(Exception):
    """Reading a source failed; ``error`` is the OSError. For a cache entry that means damage or eviction."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Damaged(Exception):
    """A cache entry whose files do not match its record."""


def _check_id(value: str, what: str) -> None:
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


def _check_names(files: Mapping[str, Path]) -> None:
    """Every name valid, and none inside another (its copy would land in the other's folder)."""
    seen = {_check_name(name) for name in files}
    for parts in seen:
        for end in range(1, len(parts)):
            if parts[:end] in seen:
                raise ValueError(f"cache file name {'/'.join(parts)!r} lies inside {'/'.join(parts[:end])!r}")


def _canonical_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _record_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``record`` as parsed JSON; TypeError/ValueError when it is not JSON data."""
    if not isinstance(record, Mapping):
        raise TypeError(f"a cache record must be a mapping, not {type(record).__name__}")
    return json.loads(_canonical_json(dict(record)))


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _mark_used(entry: Path) -> None:
    """Record a use in the entry folder's mtime (nothing else changes an entry folder once published).

    An explicit nanosecond time, because the kernel's own timestamps are only
    as fine as a clock tick and entries used in quick succession must order.
    """
    now = time.time_ns()
    try:
        os.utime(entry, ns=(now, now))
    except OSError:
        pass  # evicted meanwhile


def _children(folder: Path) -> list[Path]:
    try:
        return [Path(item.path) for item in os.scandir(folder)]
    except OSError:
        return []


def _tree_size(folder: Path) -> int:
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                pass
    return total


def _list_entries(entries: Path) -> Iterator[tuple[int, str, int]]:
    """``(last use in ns, path, size)`` of every entry folder."""
    for kind in _children(entries):
        for entry in _children(kind):
            try:
                used = os.lstat(entry).st_mtime_ns
            except OSError:
                continue
            yield used, str(entry), _tree_size(entry)


def _read_meta(entry: Path, kind: str, key: str) -> dict[str, Any] | None:
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


def _walk_source(source: Path, rel: str) -> Iterator[tuple[str, Path, bool]]:
    """``(relative name, path, is folder)`` for ``source`` and, if a folder, everything in it, sorted.

    ``source`` itself may be a symlink (the caller named it); inside a folder
    links and special files raise ValueError. Listing errors raise _ReadError.
    """
    if not source.is_dir():
        if not source.is_file():
            raise _ReadError(FileNotFoundError(errno.ENOENT, "no such file or folder", str(source)))
        yield rel, source, False
        return
    yield rel, source, True
    try:
        children = sorted(os.scandir(source), key=lambda item: item.name)
    except OSError as exc:
        raise _ReadError(exc) from exc
    for child in children:
        if child.is_symlink() or not (child.is_dir(follow_symlinks=False) or child.is_file(follow_symlinks=False)):
            raise ValueError(f"cannot cache {child.path}: only regular files and folders can be cached")
        yield from _walk_source(Path(child.path), f"{rel}/{child.name}" if rel else child.name)


def _copy_in(source: Path, files: Path, name: str) -> list[dict[str, Any]]:
    """Copy ``source`` (file or folder) to ``files/name``, fsync'ing files; return the item records."""
    items: list[dict[str, Any]] = []
    for rel, path, is_dir in _walk_source(source, name):
        destination = files / rel
        if is_dir:
            destination.mkdir(parents=True, exist_ok=True)
            items.append({"path": rel, "type": "dir"})
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        size, sha = _copy_file(path, destination, sync=True)
        items.append({"path": rel, "type": "file", "size": size, "sha256": sha})
    return items


def _copy_file(source: Path, target: Path, *, sync: bool) -> tuple[int, str]:
    """Copy bytes, returning (size, sha256). Read failures raise _ReadError, write failures OSError."""
    digest = hashlib.sha256()
    size = 0
    try:
        reader = source.open("rb")
    except OSError as exc:
        raise _ReadError(exc) from exc
    with reader, target.open("xb") as writer:
        while True:
            try:
                chunk = reader.read(_CHUNK)
            except OSError as exc:
                raise _ReadError(exc) from exc
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        if sync:
            writer.flush()
            os.fsync(writer.fileno())
    return size, digest.hexdigest()


def _copy_out(files: Path, meta: dict[str, Any], destination: Path) -> None:
    """Copy and verify an entry's items into a hidden folder in ``destination``, then move them in.

    Nothing reaches ``destination`` unless every item matched its record, so
    a miss leaves no partial files behind.
    """
    destination.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".edgekit-cache-", dir=destination))
    try:
        for item in meta["items"]:
            source, target = files / item["path"], stage / item["path"]
            if item["type"] == "dir":
                if not source.is_dir():
                    raise _Damaged(item["path"])
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if _copy_file(source, target, sync=False) != (item["size"], item["sha256"]):
                raise _Damaged(item["path"])
        for name in meta["names"]:
            if not os.path.lexists(stage / name):
                raise _Damaged(name)
        for name in meta["names"]:
            _move_into(stage / name, destination / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _move_into(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, replacing a file or folder already there."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif os.path.lexists(target):
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dirs(root: Path) -> None:
    """fsync every folder under ``root``, deepest first, so the names written are durable before publishing."""
    for parent, _, _ in sorted(os.walk(root), key=lambda step: -step[0].count(os.sep)):
        _fsync_dir(Path(parent))
