"""A minimal Debian arm64 root with python3, made without running anything inside it.

``debootstrap --foreign`` downloads and verifies the packages (Release files
are checked against Debian's keyring) and unpacks the essential ones; the
packages it only downloaded (python3 and its libraries) are unpacked here with
``dpkg-deb``. The second stage (maintainer scripts, run under emulation) is
skipped: the guest only needs files, and skipping it keeps set-up near 30 s.

No mount, chroot or binfmt registration is used. QEMU's ``-L ROOT`` makes the
guest see ``ROOT/x`` in place of ``/x`` whenever ``ROOT/x`` exists, which is how
the guest finds its own libraries and, per device, its own ``/proc/cpuinfo``
(see ``device_view``); everything else is the host's file system.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from edgekit.artifact import atomic_path, atomic_write_bytes
from edgekit.emulation.devices import EmulatedDevice
from edgekit.emulation.tools import Tools
from edgekit.errors import EmulationUnavailableError

SUITE = "bookworm"
GUEST_PYTHON = "python3.11"  # bookworm's python3
GUEST_PYTHON_VERSION = "3.11"
GUEST_GLIBC = (2, 36)  # bookworm's glibc: the newest manylinux tag the guest can load
MIRROR_ENV = "EDGEKIT_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_TIMEOUT_S = 900
# Bump when the recipe changes, so caches made by an older recipe are not reused.
RECIPE = f"{SUITE}-arm64-minbase-python3-r1"


def mirror() -> str:
    """The Debian mirror debootstrap downloads from (``$EDGEKIT_DEBIAN_MIRROR`` or deb.debian.org)."""
    return os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR


def ensure_root(cache: Path, tools: Tools) -> Path:
    """The cached arm64 root under ``cache/roots``, made first if absent. Call with the cache lock held."""
    final = cache / "roots" / RECIPE
    if (final / "usr" / "bin" / GUEST_PYTHON).is_file():
        return final
    with atomic_path(final) as tmp:
        _debootstrap(tools, tmp)
        _unpack_downloaded(tools, tmp)
        # The downloaded .debs and the mirror's package lists (about 100 MB) are not needed once unpacked.
        for leftover in (tmp / "var" / "cache" / "apt" / "archives", tmp / "var" / "lib" / "apt" / "lists"):
            shutil.rmtree(leftover, ignore_errors=True)
    return final


def _debootstrap(tools: Tools, target: Path) -> None:
    command = [str(tools.debootstrap), "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3",
               SUITE, str(target), mirror()]
    if tools.fakeroot is not None:  # debootstrap refuses to run unprivileged; fakeroot fakes the ownership calls
        command.insert(0, str(tools.fakeroot))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise EmulationUnavailableError(f"debootstrap did not finish within {DEBOOTSTRAP_TIMEOUT_S} s",
                                        f"Check the connection to {mirror()} and retry") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith(("E:", "W:"))]
        detail = lines[-1] if lines else (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmulationUnavailableError(
            f"debootstrap could not make the arm64 root from {mirror()} ({detail})",
            f"Check that this machine reaches the Debian mirror, or set {MIRROR_ENV} to one it reaches",
        )


def _unpack_downloaded(tools: Tools, root: Path) -> None:
    """Unpack every package of the root's package list that the first stage only downloaded."""
    archives = root / "var" / "cache" / "apt" / "archives"
    names = (root / "debootstrap" / "base").read_text(encoding="utf-8").split()
    for name in names:
        debs = sorted(archives.glob(f"{name}_*.deb"))
        if not debs:
            raise EmulationUnavailableError(f"debootstrap did not download the package {name}",
                                            "Remove the emulation cache folder and retry")
        # --keep-directory-symlink: bookworm merges /lib into /usr/lib with a link that a
        # plain extraction of a package's ./lib/ folder would replace with a directory.
        contents = subprocess.Popen([str(tools.dpkg_deb), "--fsys-tarfile", str(debs[-1])], stdout=subprocess.PIPE)
        try:
            subprocess.run([str(tools.tar), "-x", "--keep-directory-symlink", "-C", str(root)], stdin=contents.stdout,
                           check=True, capture_output=True)
        finally:
            assert contents.stdout is not None
            contents.stdout.close()
            contents.wait()
    if not (root / "usr" / "bin" / GUEST_PYTHON).is_file():
        raise EmulationUnavailableError(f"the arm64 root has no {GUEST_PYTHON} after unpacking",
                                        "Remove the emulation cache folder and retry")


def device_view(cache: Path, root: Path, device: EmulatedDevice) -> Path:
    """``cache/views/<device>``: the root as ``device`` sees it, with the board's own ``/proc/cpuinfo``.

    QEMU takes one ``-L`` prefix, so each board gets its own tree: a copy of
    the root made of hard links (no extra space, made in about a second)
    whose ``proc`` is a real folder holding only ``cpuinfo``. The guest then
    reads the board's cpuinfo while every other ``/proc`` path (``/proc/self``,
    ``/proc/meminfo``) is the host's. Symbolic links to the root would not do:
    the guest resolving ``/tmp`` would follow one out into the host's path.
    The cpuinfo is rewritten on each call (the host's CPU count may change).
    Call with the cache lock held.
    """
    view = cache / "views" / device.name
    marker = view / ".complete"
    if not marker.is_file() or marker.read_text(encoding="utf-8") != str(root):
        with atomic_path(view) as tmp:
            shutil.copytree(root, tmp, symlinks=True, copy_function=os.link,
                            ignore=lambda folder, names: ["proc"] if Path(folder) == root else [])
            (tmp / "proc").mkdir()
            (tmp / ".complete").write_text(str(root), encoding="utf-8")
    atomic_write_bytes(view / "proc" / "cpuinfo", device.cpuinfo(os.cpu_count() or 1).encode())
    return view
