"""Run artifacts and the device-side CLI on an emulated Raspberry Pi (arm64 under QEMU user mode).

``check_artifact(path, inputs, host_outputs, device="pi4", precision="int8")``
runs an artifact's own bytes in the aarch64 runtime of an emulated Cortex-A72
(Pi 4) or Cortex-A76 (Pi 5) and compares the outputs with the host's: a
plain-dict record with ``validated_on``, the error measures and pass/fail.
``prepare_guest`` gives the emulated board itself (``Guest.run`` runs its
Python), for running anything else there, such as the ``edgekit`` CLI.

The emulated board is a minimal Debian bookworm arm64 root with python3 and
the ``edgekit[runtime]`` wheels for aarch64, cached (``cache.cache_dir``) so a
second run starts in seconds. Nothing needs root except installing the
tools; nothing is mounted; no process outlives a call. See docs/emulation.md.

Names are imported on first use, so ``edgekit.emulation.devices`` (what the
CLI needs for ``--emulate``'s choices) loads without numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_SAMPLES": "check", "check_artifact": "check",
    "DEVICES": "devices", "EmulatedDevice": "devices", "device": "devices", "device_for_profile": "devices",
    "Guest": "guest", "prepare_guest": "guest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgekit.emulation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edgekit.emulation.{_EXPORTS[name]}"), name)
