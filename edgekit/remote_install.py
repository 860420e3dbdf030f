"""``--install``: put this machine's edgekit into a venv on the device.

edgekit is not fetched from a package index on the device: the wheel is
built here from the source checkout that is running (``build_wheel``), so
the device runs exactly this version. Its dependencies (``edgekit[runtime]``:
numpy, onnxruntime, ai-edge-litert, ...) come from the device's package index,
or, with ``wheels``, only from a folder of wheels made for the device
(``pip download --platform manylinux2014_aarch64 --only-binary=:all: ...``).

The venv is created once (``python3 -m venv``) and refreshed on every
``--install``: the wheel is reinstalled even at an unchanged version number,
because a checkout changes without a new version.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import RemoteSetupError
from edgekit.remote_shell import PROBE_CODE, PROBE_MARK, remote_path, tail

if TYPE_CHECKING:
    from edgekit.remote import Connection, Upload

# What a wheel build needs from the checkout; copied to a temporary folder so the build
# never writes build/ or *.egg-info into the working tree.
SOURCE_ITEMS = ("pyproject.toml", "setup.py", "setup.cfg", "README.md", "LICENSE", "MANIFEST.in", "edgekit", "targets")
BUILD_TIMEOUT_S = 300


def source_root() -> Path:
    """The checkout edgekit runs from; RemoteSetupError when it is an installed package."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise RemoteSetupError(
            "--install builds edgekit's wheel from a source checkout, but this edgekit is an installed package",
            "Run edgekit from its checkout, or install edgekit[runtime] on the device yourself and pass --python",
        )
    return root


def build_wheel(out_dir: Path) -> Path:
    """Build the edgekit wheel (no dependencies) from the running checkout into ``out_dir``."""
    root = source_root()
    source = out_dir / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCE_ITEMS:
        item = root / name
        if item.is_dir():
            shutil.copytree(item, source / name, ignore=ignore)
        elif item.is_file():
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, source / name)
    # --no-build-isolation: setuptools from this environment, so no package index is needed here either.
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-w", str(out_dir / "dist"), str(source)],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    wheels = sorted((out_dir / "dist").glob("edgekit-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise RemoteSetupError(f"building edgekit's wheel here failed: {tail}",
                               "Install setuptools in this environment (pip install setuptools) and retry")
    return wheels[0]


def add_wheels(upload: Upload, build_dir: Path, wheels: Path | None) -> tuple[str, str | None]:
    """Build the wheel into ``build_dir`` and add it (and the ``wheels`` folder) to ``upload``.

    Returns their paths relative to the device's working folder.
    """
    if wheels is not None and not wheels.is_dir():
        raise RemoteSetupError(f"--wheels {wheels} is not a folder", "Give a folder of .whl files made for the device")
    wheel = upload.add(build_wheel(build_dir))
    return wheel, upload.add(wheels) if wheels is not None else None


def _install_script(tmp: str, venv: str, base_python: str, wheel: str, wheels: str | None) -> str:
    pip = '"$venv/bin/python" -m pip install --quiet --disable-pip-version-check'
    offline = f" --no-index --find-links {shlex.quote(wheels)}" if wheels else ""
    return (
        f"set -e\ncd {shlex.quote(tmp)}\nvenv={venv}\n"
        f'if [ ! -x "$venv/bin/python" ]; then {base_python} -m venv "$venv"; fi\n'
        f"{pip} --force-reinstall --no-deps {shlex.quote(wheel)}\n"
        f"{pip}{offline} {shlex.quote(wheel + '[runtime]')}\n"
        f'"$venv/bin/python" -c {shlex.quote(PROBE_CODE)}\n'
    )


def install(connection: Connection, tmp: str, wheel: tuple[str, str | None],
            facts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Create or refresh the venv on the device and install the uploaded wheel with the runtime extra.

    ``facts`` describe the Python that creates the venv (``remote._probe``).
    Returns the venv's Python (a shell word) and its facts.
    """
    import json

    venv = remote_path(connection.options.venv)
    script = _install_script(tmp, venv, remote_path(facts["python"]), *wheel)
    done = connection.run(script, "installing edgekit")
    probe = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith(PROBE_MARK + " ")]
    if done.returncode != 0 or not probe:
        output = done.stderr + done.stdout
        fix = ("Install the venv module there (Debian/Raspberry Pi OS: sudo apt install python3-venv)"
               if "ensurepip" in output or "venv" in output and "No module" in output else
               "Check the device can reach a package index, or pass --wheels DIR with wheels of "
               "edgekit[runtime]'s dependencies built for the device")
        raise RemoteSetupError(f"installing edgekit in {connection.options.venv} on {connection.target} failed: "
                               f"{tail(output)}", fix)
    return venv + "/bin/python", json.loads(probe[-1])
