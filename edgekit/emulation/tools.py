"""The host programs emulation needs, found on this machine or installed on request.

Nothing here installs anything unless the caller asks (``install_tools``, the
CLI's ``--install-tools``): a missing tool is an ``EmulationUnavailableError``
that names it and the apt command that provides it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EmulationUnavailableError

# Debian package that provides each program.
PACKAGES = {"qemu-aarch64-static": "qemu-user-static", "debootstrap": "debootstrap", "dpkg-deb": "dpkg",
            "tar": "tar", "fakeroot": "fakeroot"}
APT_TIMEOUT_S = 300


@dataclass(frozen=True)
class Tools:
    """Paths of the host programs: QEMU's aarch64 user-mode emulator, debootstrap, dpkg-deb and tar.

    ``fakeroot`` is set when debootstrap must run as a normal user (it
    refuses to run unprivileged otherwise); root needs none.
    """

    qemu: Path
    debootstrap: Path
    dpkg_deb: Path
    tar: Path
    fakeroot: Path | None

    def qemu_version(self) -> str:
        """QEMU's first ``--version`` line, e.g. ``qemu-aarch64 version 7.2.22 (Debian ...)``."""
        done = subprocess.run([str(self.qemu), "--version"], capture_output=True, text=True, timeout=30, check=False)
        return (done.stdout.splitlines() or ["qemu-aarch64 (version unknown)"])[0].strip()


def _which(program: str) -> Path | None:
    # /usr/sbin is not on a normal user's PATH, but debootstrap lives there.
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin:/usr/bin:/bin")
    return Path(found) if found else None


def apt_command(packages: list[str]) -> str:
    """The command a user runs to get ``packages`` (sudo unless already root)."""
    sudo = "" if os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get install -y --no-install-recommends {' '.join(packages)}"


def missing_programs() -> list[str]:
    """Programs emulation needs that this machine lacks (empty when all are there)."""
    need = ["debootstrap", "dpkg-deb", "tar"]
    if _which("qemu-aarch64-static") is None and _which("qemu-aarch64") is None:
        need.insert(0, "qemu-aarch64-static")
    if os.geteuid() != 0:
        need.append("fakeroot")
    return [p for p in need if p == "qemu-aarch64-static" or _which(p) is None]


def find_tools() -> Tools:
    """The tools, or an ``EmulationUnavailableError`` naming every missing one and how to install it."""
    missing = missing_programs()
    if missing:
        packages = sorted({PACKAGES[p] for p in missing})
        raise EmulationUnavailableError(
            f"emulating an ARM device needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            "not installed here",
            f"Install {'it' if len(missing) == 1 else 'them'} with: {apt_command(packages)} "
            "(or pass --install-tools to let edgekit run that as root)",
        )
    qemu = _which("qemu-aarch64-static") or _which("qemu-aarch64")
    assert qemu is not None
    return Tools(qemu, _which("debootstrap"), _which("dpkg-deb"), _which("tar"),  # type: ignore[arg-type]
                 None if os.geteuid() == 0 else _which("fakeroot"))


def install_tools() -> None:
    """Install the missing tools with apt-get (root only, bounded in time); raise if that is impossible."""
    missing = missing_programs()
    if not missing:
        return
    packages = sorted({PACKAGES[p] for p in missing})
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        why = "edgekit is not running as root" if os.geteuid() != 0 else "this system has no apt-get"
        raise EmulationUnavailableError(f"cannot install {', '.join(packages)}: {why}",
                                        f"Install them yourself: {apt_command(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = _apt(["install", "-y", "--no-install-recommends", *packages], env, packages)
    if done.returncode != 0:  # stale package lists are the usual cause: refresh them once and retry
        _apt(["update"], env, packages)
        done = _apt(["install", "-y", "--no-install-recommends", *packages], env, packages)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EmulationUnavailableError(f"apt-get could not install {', '.join(packages)} ({tail[0]})",
                                        "Check that this machine reaches the Debian mirror, then retry")
    if missing_programs():
        raise EmulationUnavailableError(f"apt-get installed {', '.join(packages)} but {', '.join(missing_programs())} "
                                        "is still missing", f"Install it yourself: {apt_command(packages)}")


def _apt(args: list[str], env: dict[str, str], packages: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise EmulationUnavailableError(f"apt-get {args[0]} did not finish within {APT_TIMEOUT_S} s",
                                        f"Install the tools yourself: {apt_command(packages)}") from None
