"""Which device a store belongs to: its target (device class) and release channel.

A store records its identity at its first install (``edgekit install
--target NAME --channel NAME``); every later install checks the bundle's
signed ``release.target`` and ``release.channel`` against it, so a validly
signed bundle for another device class or channel never installs (Mender
refuses such an update by ``device_type``). A store made before identities
existed takes its current release's target and channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import InputError, SecurityError

DEFAULT_CHANNEL = "stable"
TARGET_ENV = "EDGEKIT_TARGET"
CHANNEL_ENV = "EDGEKIT_CHANNEL"


@dataclass(frozen=True)
class DeviceIdentity:
    target: str
    channel: str

    def as_dict(self) -> dict[str, str]:
        return {"target": self.target, "channel": self.channel}

    def __str__(self) -> str:
        return f"target {self.target}, channel {self.channel}"


def recorded(state: dict[str, Any] | None, current_manifest: Path | None) -> DeviceIdentity | None:
    """The store's identity: ``state["device"]``, else its current release's target and channel, else None."""
    if state is None:
        return None
    device = state.get("device")
    if isinstance(device, dict) and isinstance(device.get("target"), str) and isinstance(device.get("channel"), str):
        return DeviceIdentity(device["target"], device["channel"])
    if current_manifest is None:
        return None
    try:
        release = json.loads(current_manifest.read_text(encoding="utf-8"))["release"]
        return DeviceIdentity(release["target"], release["channel"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve(store_identity: DeviceIdentity | None, target: str | None, channel: str | None,
            store: Path) -> DeviceIdentity:
    """The identity an install checks against: the store's, which flags may restate but not change.

    The first install into a store must name the target; the channel defaults to stable.
    """
    if store_identity is None:
        if target is None:
            raise InputError(
                f"store {store} has no device identity yet",
                f"Pass --target NAME (this device's profile, e.g. raspberry-pi-4; or set ${TARGET_ENV}) and, for a "
                f"channel other than {DEFAULT_CHANNEL}, --channel NAME on the first install",
            )
        return DeviceIdentity(target, channel or DEFAULT_CHANNEL)
    asked = DeviceIdentity(target or store_identity.target, channel or store_identity.channel)
    if asked != store_identity:
        raise InputError(
            f"store {store} belongs to {store_identity}, but this install says {asked}",
            "Use one store per device class and channel; to re-provision this device, install into a new store",
        )
    return store_identity


def check_release(identity: DeviceIdentity, release: dict[str, Any]) -> None:
    """Refuse a signed release made for another target or channel."""
    bundle = DeviceIdentity(release["target"], release["channel"])
    if bundle != identity:
        raise SecurityError(
            f"the bundle is for {bundle}; this device is {identity}",
            f"Install the bundle made for {identity.target} on the {identity.channel} channel "
            f"(edgekit bundle BUILD -t {identity.target} --channel {identity.channel})",
        )
