"""An emulated board: the guest Python, how to start it, and how to run it without leaving anything behind.

``prepare_guest`` makes (or finds in the cache) everything a run needs and
returns a ``Guest``. ``Guest.run`` starts the guest Python under QEMU in its
own process group, bounded in time, and kills the whole group in ``finally``:
a runtime's worker process cannot outlive the call.

Child processes: the guest's Python sometimes starts another Python
(``sys.executable``), e.g. the LiteRT worker. Without binfmt_misc (a root-only,
host-wide setting edgekit does not touch) the kernel cannot execute an aarch64
binary, so the guest's ``sys.executable`` is pointed (by a ``sitecustomize``
on its path) at a small shell launcher that re-enters QEMU.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekit.artifact import atomic_write_bytes
from edgekit.emulation import cache as cache_mod
from edgekit.emulation.devices import EmulatedDevice, device as find_device
from edgekit.emulation.rootfs import GUEST_PYTHON, device_view, ensure_root
from edgekit.emulation.tools import Tools, find_tools, install_tools as run_apt
from edgekit.emulation.wheels import device_requirements, ensure_site

LAUNCHER_ENV = "EDGEKIT_GUEST_PYTHON"
DEFAULT_TIMEOUT_S = 900.0

_SITECUSTOMIZE = f'''"""Written by edgekit.emulation: children of the emulated Python start through QEMU too."""
import os
import sys

_launcher = os.environ.get("{LAUNCHER_ENV}")
if _launcher:
    sys.executable = sys._base_executable = _launcher
'''


@dataclass(frozen=True)
class Guest:
    """A prepared emulated board: run ``python`` commands in it with ``run``.

    ``paths`` go first on the guest's ``PYTHONPATH`` (e.g. an edgekit copy),
    then ``site`` (the runtime packages). ``setup_s`` is how long preparing
    took (seconds; near zero from a warm cache).
    """

    device: EmulatedDevice
    tools: Tools
    root: Path
    view: Path
    site: Path
    boot: Path
    setup_s: float = 0.0
    requirements: tuple[str, ...] = ()

    @property
    def launcher(self) -> Path:
        return self.boot / f"python-{self.device.name}"

    def environment(self, paths: Sequence[Path] = (), extra: dict[str, str] | None = None) -> dict[str, str]:
        """The guest's environment: the Python path (boot, ``paths``, site) and nothing of the host's Python.

        QEMU's CPU and prefix are on the launcher's command line, so host
        ``QEMU_*`` and ``PYTHON*`` variables are dropped rather than leak in.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_", "VIRTUAL_ENV"))}
        env.update({
            "PYTHONPATH": os.pathsep.join(str(p) for p in [self.boot, *paths, self.site]),
            "PYTHONNOUSERSITE": "1",
            # No current folder on sys.path: run from a checkout, the guest must not import the host's source.
            "PYTHONSAFEPATH": "1",
            LAUNCHER_ENV: str(self.launcher),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        })
        env.update(extra or {})
        return env

    def run(self, args: list[str], *, paths: Sequence[Path] = (), cwd: Path | None = None,
            timeout_s: float = DEFAULT_TIMEOUT_S,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``python ARGS`` in the guest; returns its exit code and output, or raises ``TimeoutExpired``.

        The guest runs in a new session; whatever it started is killed with
        its process group before this returns, whether it finished, timed
        out or the caller was interrupted.
        """
        proc = subprocess.Popen([str(self.launcher), *args], cwd=cwd, env=self.environment(paths, extra_env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout_s)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        finally:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the guest's own children too (e.g. a runtime worker)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def _write_boot(cache: Path, tools: Tools, root: Path, device: EmulatedDevice) -> Path:
    """The launcher for ``device`` (a /bin/sh script: the host kernel runs it natively) and the sitecustomize."""
    boot = cache / "boot"
    launcher = boot / f"python-{device.name}"
    view = cache / "views" / device.name
    command = " ".join(shlex.quote(str(part)) for part in (tools.qemu, "-L", view, "-cpu", device.qemu_cpu,
                                                           root / "usr" / "bin" / GUEST_PYTHON))
    script = f'#!/bin/sh\n# Written by edgekit.emulation: the {device.label} guest Python under QEMU.\nexec {command} "$@"\n'
    if not launcher.is_file() or launcher.read_text(encoding="utf-8") != script:
        atomic_write_bytes(launcher, script.encode())
        launcher.chmod(0o755)
    custom = boot / "sitecustomize.py"
    if not custom.is_file() or custom.read_text(encoding="utf-8") != _SITECUSTOMIZE:
        atomic_write_bytes(custom, _SITECUSTOMIZE.encode())
    return boot


def prepare_guest(device: str | EmulatedDevice, cache_dir: Path | str | None = None, *, install_tools: bool = False,
                  requirements: list[str] | None = None) -> Guest:
    """Make or reuse the emulated ``device`` (``pi4``/``pi5``) with ``requirements`` installed in its Python.

    ``requirements`` defaults to what ``edgekit[runtime]`` installs, pinned to
    the host's versions. ``install_tools`` lets edgekit apt-get install QEMU
    and debootstrap when missing (root only); otherwise a missing tool is an
    ``EmulationUnavailableError`` saying what to install. The first run takes
    45-50 s (debootstrap, wheel downloads); later ones find everything cached
    and return in well under a second.
    """
    started = time.perf_counter()
    board = device if isinstance(device, EmulatedDevice) else find_device(device)
    if install_tools:
        run_apt()
    tools = find_tools()
    folder = cache_mod.cache_dir(cache_dir)
    wanted = requirements if requirements is not None else device_requirements()
    with cache_mod.locked(folder):
        for sub in ("roots", "views", "sites"):
            cache_mod.sweep_partial(folder / sub)
        root = ensure_root(folder, tools)
        view = device_view(folder, root, board)
        site = ensure_site(folder, wanted)
        boot = _write_boot(folder, tools, root, board)
    return Guest(board, tools, root, view, site, boot, time.perf_counter() - started, tuple(wanted))

