"""A description of the machine a measurement ran on.

Every bench result carries one, so results gathered on several devices (a lab
of Raspberry Pis, a laptop, a CI runner) can be merged and told apart later.
Only the standard library is used: package versions are read from installed
metadata, so describing the machine never imports a runtime.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any



def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's marketing name, as precise as the OS tells it; ``"unknown"`` otherwise."""
    cpuinfo = _read("/proc/cpuinfo")
    if cpuinfo:
        fields: dict[str, str] = {}
        for line in cpuinfo.splitlines():
            key, sep, value = line.partition(":")
            if sep and value.strip():
                fields.setdefault(key.strip().lower(), value.strip())
        # x86 says "model name"; ARM kernels say "Model" (board) or only "CPU part".
        for key in ("model name", "hardware", "cpu model", "processor"):
            value = fields.get(key)
            if value and not value.isdigit():
                return value
        if "cpu part" in fields:
            return f"ARM CPU part {fields['cpu part']} (implementer {fields.get('cpu implementer', '?')})"
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5, check=False
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or "unknown"


def board_model() -> str | None:
    """The board name on single-board computers (e.g. "Raspberry Pi 4 Model B Rev 1.4")."""
    text = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    return text.strip("\x00\n ") if text else None


def os_name() -> str:
    """A readable OS name: the distribution's PRETTY_NAME on Linux, else ``platform``'s."""
    release = _read("/etc/os-release")
    if release:
        for line in release.splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    if platform.system() == "Darwin":
        return f"macOS {platform.mac_ver()[0]}"
    return f"{platform.system()} {platform.release()}"


def total_ram_mb() -> float | None:
    """Physical memory in MiB, or None where it cannot be read without extra packages."""
    meminfo = _read("/proc/meminfo")
    if meminfo:
        for line in meminfo.splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20, 1)
    except (ValueError, OSError, AttributeError):
        return None


def package_versions(names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Installed versions of ``names`` (missing ones are left out); by default every format's runtimes.

    Reading metadata does not import a package, so this stays cheap even for heavy ones.
    """
    if names is None:
        from edgekit.backends import runtime_distributions

        names = runtime_distributions()
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe(label: str | None = None) -> dict[str, Any]:
    """Everything needed to tell measurements from different machines apart.

    ``label`` is a free-form name chosen by the user (e.g. ``"pi4-lab-2"``).
    """
    from edgekit import __version__

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "label": label,
        "hostname": socket.gethostname(),
        "board": board_model(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_mb": total_ram_mb(),
        "os": os_name(),
        "system": platform.system(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "edgekit": __version__,
        "runtimes": package_versions(),
    }


# Names the same instruction set goes by (Linux says aarch64, macOS and iOS say arm64).
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


def same_arch(device_arch: str, host_arch: str | None = None) -> bool:
    """Whether this host (or ``host_arch``) has the instruction set a profile's device has."""
    def norm(arch: str) -> str:
        return _ARCH_ALIASES.get(arch.lower(), arch.lower())

    return norm(device_arch) == norm(host_arch or platform.machine())


def short_name(machine: dict[str, Any]) -> str:
    """A one-line name for tables: the label, else the board, else CPU and arch."""
    if machine.get("label"):
        return str(machine["label"])
    if machine.get("board"):
        return str(machine["board"])
    return f"{machine.get('cpu', 'unknown CPU')} ({machine.get('arch', '?')})"
