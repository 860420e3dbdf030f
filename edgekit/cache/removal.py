"""Everything that removes anything from a cache root: damaged entries, LRU eviction, clearing, leftovers.

All of it runs under the root's exclusive ``lock`` (an ``flock``, released
also when the process dies), and entries leave only by a ``rename`` into
``trash/``: a reader copying an entry either finishes or meets a missing
file and reports a miss. Staging folders of live puts are told from a dead
put's leftovers by their own lock (see ``edgekit.cache.publish.staging``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekit.cache.files import children, inode, list_entries


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the root's exclusive lock (released by closing the descriptor, also if the process dies)."""
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def discard(root: Path, entry: Path, entry_inode: int | None) -> None:
    """Remove ``entry`` if it is still the folder with ``entry_inode`` (best effort, never raises)."""
    if entry_inode is None:
        return
    try:
        with _locked(root):
            if inode(entry) == entry_inode:
                _trash(root, entry)
    except OSError:
        pass  # removal is housekeeping; the caller reports a miss either way


def _trash(root: Path, path: Path) -> None:
    """Move ``path`` into ``trash/`` (readers then miss it) and delete it. Caller holds the lock."""
    trash = root / "trash"
    trash.mkdir(parents=True, exist_ok=True)
    grave = trash / uuid.uuid4().hex
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return
    shutil.rmtree(grave, ignore_errors=True)  # leftovers are swept by the next eviction


def evict_lru(root: Path, limit: int) -> int:
    """Sweep leftovers, then remove least-recently-used entries until the total is at most ``limit``.

    Returns the bytes of entries removed. Ties in last use go to the name, so
    the order is deterministic.
    """
    freed = 0
    with _locked(root):
        _sweep(root)
        entries = sorted(list_entries(root / "entries"))
        total = sum(size for _, _, size in entries)
        for _, path, size in entries:
            if total <= limit:
                break
            _trash(root, Path(path))
            total -= size
            freed += size
    return freed


def _sweep(root: Path) -> None:
    """Delete dead puts' staging folders (their lock is free) and all trash. Caller holds the lock."""
    for child in children(root / "staging"):
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
    for child in children(root / "trash"):
        shutil.rmtree(child, ignore_errors=True)


def clear_root(root: Path) -> None:
    """Remove every entry and leftover. Readers racing it see misses; running puts still publish."""
    with _locked(root):
        _trash(root, root / "entries")
        (root / "entries").mkdir(exist_ok=True)
        _sweep(root)
