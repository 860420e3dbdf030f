"""The guest's Python packages: aarch64 wheels fetched and installed by the host's pip.

The guest has no pip and running one under emulation would be slow, so the
host's pip does the work for the guest's platform: ``pip download`` with the
guest's manylinux tags and Python version, then ``pip install --target`` into a
plain folder the guest puts on ``PYTHONPATH``. A venv would not help: its
``python`` is a symlink that QEMU's ``-L`` prefix does not follow into the root.

Versions are pinned to the host's installed ones where the host has the
distribution, so the emulated run and the host run differ in architecture
(kernels, instruction set), not in runtime release.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from edgekit.artifact import atomic_path
from edgekit.emulation.rootfs import GUEST_GLIBC, GUEST_PYTHON_VERSION, RECIPE
from edgekit.errors import EmulationUnavailableError

# The extra a device installs (``pip install "edgekit[runtime]"``): no torch, no converter.
DEVICE_EXTRA = "runtime"
PIP_TIMEOUT_S = 900
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# What pip prints when it cannot reach an index (it then also reports "no matching distribution").
_UNREACHABLE = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                "Could not fetch URL", "ProxyError", "ConnectTimeoutError", "ReadTimeoutError")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def platform_args() -> list[str]:
    """pip's ``--platform`` flags for the guest: every manylinux tag its glibc can load, newest first.

    pip does not widen a ``manylinux_2_X`` tag to older ones by itself, and
    wheels are tagged unevenly (ai-edge-litert needs ``manylinux_2_27``,
    others ship only ``manylinux2014``), so all are listed.
    """
    major, newest = GUEST_GLIBC
    tags = [f"manylinux_{major}_{minor}_aarch64" for minor in range(newest, 16, -1)] + ["manylinux2014_aarch64"]
    return [arg for tag in tags for arg in ("--platform", tag)]


def _target_args() -> list[str]:
    return ["--only-binary=:all:", "--python-version", GUEST_PYTHON_VERSION, "--implementation", "cp", *platform_args()]


def device_requirements(requires: list[str] | None = None) -> list[str]:
    """What ``pip install "edgekit[runtime]"`` installs, pinned to the host's versions where it has them.

    ``requires`` are Requires-Dist lines (a wheel's, see ``wheel_requires``);
    by default the installed edgekit's, or a source checkout's pyproject.toml.
    """
    lines = requires if requires is not None else _installed_requires()
    wanted: dict[str, str] = {}
    for line in lines:
        spec, _, marker = line.partition(";")
        extra = _EXTRA.search(marker)
        name = _NAME.match(spec)
        if name is None or name.group(1).lower() == "edgekit" or (extra and extra.group(1) != DEVICE_EXTRA):
            continue
        try:
            wanted[name.group(1).lower()] = f"{name.group(1)}=={importlib.metadata.version(name.group(1))}"
        except importlib.metadata.PackageNotFoundError:
            wanted.setdefault(name.group(1).lower(), spec.strip())
    return sorted(wanted.values())


def _installed_requires() -> list[str]:
    try:
        return list(importlib.metadata.requires("edgekit") or [])
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        extras = project.get("optional-dependencies", {}).get(DEVICE_EXTRA, [])
        return [*project["dependencies"], *(f'{r}; extra == "{DEVICE_EXTRA}"' for r in extras)]


def wheel_requires(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def site_key(requirements: list[str]) -> str:
    """A short name for one set of guest packages (changes when a pin, the tags or the root recipe change)."""
    payload = json.dumps([RECIPE, GUEST_PYTHON_VERSION, platform_args(), sorted(requirements)])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def ensure_site(cache: Path, requirements: list[str]) -> Path:
    """``cache/sites/<key>``: ``requirements`` installed for the guest, made first if absent (lock held)."""
    final = cache / "sites" / site_key(requirements)
    if (final / ".complete").is_file():
        return final
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _pip(["download", "--dest", str(wheels), *_target_args(), *requirements], "download the guest's wheels")
    with atomic_path(final) as tmp:
        # Bytecode compiled by the host is valid in the guest only when both run the same Python version.
        same_python = f"{sys.version_info[0]}.{sys.version_info[1]}" == GUEST_PYTHON_VERSION
        compile_flag = [] if same_python else ["--no-compile"]
        _pip(["install", "--no-index", "--find-links", str(wheels), "--target", str(tmp), *compile_flag,
              *_target_args(), *requirements], "install the guest's wheels")
        # Console scripts point at the host's interpreter; the guest runs `python -m` instead.
        shutil.rmtree(tmp / "bin", ignore_errors=True)
        (tmp / ".complete").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    return final


def _pip(args: list[str], what: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise EmulationUnavailableError(f"pip could not {what} within {PIP_TIMEOUT_S} s",
                                        "Check the connection to the Python package index and retry") from None
    if done.returncode == 0:
        return
    errors = [ln.strip() for ln in done.stderr.splitlines() if ln.startswith("ERROR")]
    detail = errors[0] if errors else (done.stderr.strip().splitlines() or ["no output"])[-1]
    if "No module named pip" in done.stderr:
        raise EmulationUnavailableError("this Python has no pip, which fetches the guest's wheels",
                                        f"Install it with: {sys.executable} -m ensurepip")
    if any(sign in done.stderr for sign in _UNREACHABLE):
        raise EmulationUnavailableError(f"pip could not {what}: the Python package index is unreachable ({detail})",
                                        "Check this machine's connection to the index (pip config, proxy) and retry")
    if "matching distribution" in done.stderr or "from versions" in detail:
        raise EmulationUnavailableError(f"pip could not {what}: {detail}",
                                        "The package has no aarch64 wheel for Python "
                                        f"{GUEST_PYTHON_VERSION} at that version; pin one that has")
    raise EmulationUnavailableError(f"pip could not {what}: {detail}",
                                    "Check that this machine reaches the Python package index (pip config, proxy)")


def build_edgekit_wheel(source: Path, out: Path) -> Path:
    """Build edgekit's wheel from the checkout at ``source`` into ``out`` (``pip wheel --no-deps``).

    The project files are copied to a scratch folder first, so the build's
    ``build/`` and ``*.egg-info`` never appear in the checkout.
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-wheel-") as scratch:
        project = Path(scratch) / "project"
        project.mkdir()
        for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "edgekit", "targets"):
            item = source / name
            if item.is_dir():
                shutil.copytree(item, project / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif item.is_file():
                shutil.copy2(item, project / name)
        isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
        _pip(["wheel", "--no-deps", *isolation, "-w", str(out), str(project)], "build edgekit's wheel")
    wheels = sorted(out.glob("edgekit-*.whl"), key=lambda p: p.stat().st_mtime)
    return wheels[-1]


def install_wheel(wheel: Path, target: Path) -> Path:
    """Install a pure-Python wheel (no dependencies) into folder ``target`` for the guest."""
    _pip(["install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], f"install {wheel.name}")
    shutil.rmtree(target / "bin", ignore_errors=True)
    return target
