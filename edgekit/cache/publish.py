"""How a put becomes visible: built in a locked folder under ``staging/``, published with one ``rename``.

An entry is therefore either absent or complete, never partial. When another
process published the same key first, its entry is kept (equal keys mean
equal content) and this copy is dropped with the staging folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekit.artifact import fsync_dir
from edgekit.cache.entry import read_meta
from edgekit.cache.files import inode, mark_used
from edgekit.cache.removal import discard


@contextmanager
def staging(root: Path) -> Iterator[Path]:
    """A new folder under ``staging/``, flock'ed while it exists.

    The lock is how a sweep tells a live put from a dead one's leftovers,
    without guessing from ages.
    """
    parent = root / "staging"
    while True:
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=parent))
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if inode(path) == os.fstat(fd).st_ino:
            break
        os.close(fd)  # a sweep removed it between mkdtemp and flock: take another
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def publish(root: Path, staged: Path, entry: Path, kind: str, key: str) -> None:
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
            if read_meta(entry, kind, key) is not None:
                mark_used(entry)
                return  # the race was lost to an equal entry
            discard(root, entry, inode(entry))  # a damaged leftover: replace it
            continue
        fsync_dir(entry.parent)
        return
    # Still contended after three tries: storing is an optimisation, so give up quietly.
