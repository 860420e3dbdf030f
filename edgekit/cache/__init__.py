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

# The modules, each with one job (their docstrings state their contracts):
#   keys     cache_key and path_digest
#   entry    the on-disk format of one entry: entry.json, names, files copied in and out with checks
#   files    filesystem helpers: walking and copying sources, fsync, moves, listing entries
#   publish  staging a put and publishing it with one rename
#   removal  the root lock, damaged entries, LRU eviction, clear() and leftovers
#   store    the Cache interface, its stats, NullCache and BuildCache

from __future__ import annotations

from edgekit.cache.entry import ENTRY_FORMAT
from edgekit.cache.keys import cache_key, path_digest
from edgekit.cache.store import (
    DEFAULT_MAX_BYTES,
    BuildCache,
    Cache,
    CacheStats,
    KindStats,
    NullCache,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ENTRY_FORMAT",
    "BuildCache",
    "Cache",
    "CacheStats",
    "KindStats",
    "NullCache",
    "cache_key",
    "path_digest",
]
