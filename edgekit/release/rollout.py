"""Staged rollout: which devices take a release, decided on the device.

A device's bucket is ``int(sha256(f"{model}:{version}:{device_id}")[:8]) mod
100`` and it takes the release when ``bucket < rollout_percentage``. Every
device computes its own answer, the same answer every time, with no server;
raising the percentage of the same release only adds devices (a device in at
20% stays in at 50%). The version is part of the hash so each release picks a
different first group instead of always the same unlucky devices. The ``:``
separators keep ("ab", "c") and ("a", "bc") apart.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from edgekit.errors import InputError

DEVICE_ID_ENV = "EDGEKIT_DEVICE_ID"
MACHINE_ID_FILE = Path("/etc/machine-id")


def bucket(model: str, version: str, device_id: str) -> int:
    """The device's bucket, 0..99, for this model release."""
    digest = hashlib.sha256(f"{model}:{version}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def selected(model: str, version: str, device_id: str, percentage: int) -> bool:
    """True if a rollout to ``percentage`` percent of devices includes this device."""
    return bucket(model, version, device_id) < percentage


def device_id(explicit: str | None, machine_id_file: Path = MACHINE_ID_FILE) -> str | None:
    """The device id: the explicit value, else $EDGEKIT_DEVICE_ID, else /etc/machine-id, else None."""
    for candidate in (explicit, os.environ.get(DEVICE_ID_ENV)):
        if candidate is not None:
            value = candidate.strip()
            if not value or len(value) > 256 or any(ch < " " for ch in value):
                raise InputError(f"device id {candidate!r} is empty or not printable", "Pass a plain --device-id")
            return value
    try:
        value = machine_id_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None
