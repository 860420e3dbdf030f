"""Where the emulated root and wheels are kept, and how two runs share them safely.

Layout under the cache folder (``cache_dir``)::

    .lock                     held (flock) while anything below is created
    roots/<recipe>/           a Debian arm64 root with python3, complete or absent
    views/<device>/           links into the root plus that board's /proc/cpuinfo
    wheels/                   downloaded aarch64 wheels (shared by every site)
    sites/<key>/              runtime packages installed for the guest, one per requirement set
    boot/                     the guest-python launcher and its sitecustomize

Entries are built in a hidden temporary folder beside their final name and
renamed into place when complete, so a reader never sees half an entry, and
an interrupted run leaves only a hidden folder that the next locked run
removes. Readers take no lock: complete entries are never changed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import OutputError

CACHE_ENV = "EDGEKIT_CACHE"


def cache_dir(override: Path | str | None = None) -> Path:
    """The emulation cache: ``override``, else the ``emulation`` folder of edgekit's cache root.

    edgekit's cache root is ``$EDGEKIT_CACHE``, else ``$XDG_CACHE_HOME/edgekit``
    (when absolute, as the XDG spec asks), else ``~/.cache/edgekit``: the
    build cache (``edgekit.cache``) keeps its entries there too, beside this
    folder. ``override`` is used as given.
    """
    if override is not None:
        return Path(override).expanduser().resolve()
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base).expanduser().resolve() / "emulation"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) / "edgekit" if xdg and Path(xdg).is_absolute() else Path.home() / ".cache" / "edgekit"
    return root.resolve() / "emulation"


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the cache's exclusive lock: one process at a time creates entries; others wait.

    The lock is an ``flock`` on ``folder/.lock``, released by the kernel if
    the process dies, so a killed run never blocks the next one.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "a+b")  # noqa: SIM115 - closed in finally, after unlocking
    except OSError as exc:
        raise OutputError(f"cannot use the emulation cache {folder}: {exc.strerror or exc}",
                          f"Give a writable folder with --cache-dir or the {CACHE_ENV} environment variable") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def sweep_partial(folder: Path) -> None:
    """Remove hidden leftovers of interrupted builds in ``folder`` (call with the lock held)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(".") and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
