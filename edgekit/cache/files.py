"""Filesystem helpers of the build cache: walking and copying sources, durable writes, moves, entry bookkeeping.

Nothing here knows the entry format (``edgekit.cache.entry``) or how keys are
made. A failure to read a source raises ``ReadError`` (wrapping the
``OSError``), so that callers can tell a vanished or unreadable input from a
failure to write; write failures raise their ``OSError``. The helpers that
only look (``inode``, ``children``, ``list_entries``) and ``mark_used`` never
raise: a path that vanished meanwhile is simply not there.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from edgekit.artifact import fsync_dir

CHUNK = 1 << 20


class ReadError(Exception):
    """Reading a source failed; ``error`` is the OSError. For a cache entry that means damage or eviction."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def walk_source(source: Path, rel: str) -> Iterator[tuple[str, Path, bool]]:
    """``(relative name, path, is folder)`` for ``source`` and, if a folder, everything in it, sorted.

    ``source`` itself may be a symlink (the caller named it); inside a folder
    links and special files raise ValueError. Listing errors raise ReadError.
    """
    if not source.is_dir():
        if not source.is_file():
            raise ReadError(FileNotFoundError(errno.ENOENT, "no such file or folder", str(source)))
        yield rel, source, False
        return
    yield rel, source, True
    try:
        children = sorted(os.scandir(source), key=lambda item: item.name)
    except OSError as exc:
        raise ReadError(exc) from exc
    for child in children:
        if child.is_symlink() or not (child.is_dir(follow_symlinks=False) or child.is_file(follow_symlinks=False)):
            raise ValueError(f"cannot cache {child.path}: only regular files and folders can be cached")
        yield from walk_source(Path(child.path), f"{rel}/{child.name}" if rel else child.name)


def copy_file(source: Path, target: Path, *, sync: bool) -> tuple[int, str]:
    """Copy bytes, returning (size, sha256). Read failures raise ReadError, write failures OSError."""
    digest = hashlib.sha256()
    size = 0
    try:
        reader = source.open("rb")
    except OSError as exc:
        raise ReadError(exc) from exc
    with reader, target.open("xb") as writer:
        while True:
            try:
                chunk = reader.read(CHUNK)
            except OSError as exc:
                raise ReadError(exc) from exc
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        if sync:
            writer.flush()
            os.fsync(writer.fileno())
    return size, digest.hexdigest()


def move_into(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, replacing a file or folder already there."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif os.path.lexists(target):
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def fsync_dirs(root: Path) -> None:
    """fsync every folder under ``root``, deepest first, so the names written are durable before publishing."""
    for parent, _, _ in sorted(os.walk(root), key=lambda step: -step[0].count(os.sep)):
        fsync_dir(Path(parent))


def inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def mark_used(entry: Path) -> None:
    """Record a use in the entry folder's mtime (nothing else changes an entry folder once published).

    An explicit nanosecond time, because the kernel's own timestamps are only
    as fine as a clock tick and entries used in quick succession must order.
    """
    now = time.time_ns()
    try:
        os.utime(entry, ns=(now, now))
    except OSError:
        pass  # evicted meanwhile


def children(folder: Path) -> list[Path]:
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


def list_entries(entries: Path) -> Iterator[tuple[int, str, int]]:
    """``(last use in ns, path, size)`` of every entry folder."""
    for kind in children(entries):
        for entry in children(kind):
            try:
                used = os.lstat(entry).st_mtime_ns
            except OSError:
                continue
            yield used, str(entry), _tree_size(entry)
