"""A short-lived signed index of the latest releases: the defence against freeze and replay (TUF's timestamp role).

A bundle's expiry is long (days to months), so an attacker who serves a
device an older, still valid release, or nothing at all, goes unnoticed.
The publisher signs an index of what is current, valid for hours
(``edgekit index BUNDLE... --key K --expires-in HOURS``); devices fetch it
with every update check and pass it to ``install --index`` or ``status
--index``. A device then refuses a release older than the one the index
lists for its model, target and channel, and ``status`` fails when the
device runs behind the index or holds no fresh one. An attacker cannot make a
fresh index without the key; withholding it is what ``status`` reports.

Format (canonical JSON; ``signature`` is a signature file, as in bundles,
over the canonical bytes of everything else)::

    {"type": "edgekit-release-index", "issued_at": "...Z", "expires_at": "...Z",
     "releases": [{"model": ..., "target": ..., "channel": ..., "version": ..., "manifest_sha256": ...}],
     "signature": {"alg": "ed25519", "keyid": ..., "sig": ..., "cert": ...}}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError, SecurityError
from edgekit.release.manifest import canonical_bytes
from edgekit.release.signing import Trusted, sign, verify_signature
from edgekit.release.timestamps import format_utc, parse_utc
from edgekit.release.version import parse_semver

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TYPE = "edgekit-release-index"
_MAX_FILE = 4 << 20
_REFUSE = "Refuse it; fetch a fresh index from the publisher (edgekit index), and check the device clock"


def make_index(manifests: list[bytes], private_key: Ed25519PrivateKey, issued_at: int, expires_at: int,
               certificate: dict[str, str] | None = None) -> bytes:
    """The signed index of the releases whose signed manifests' bytes are ``manifests`` (the newest per
    model, target and channel)."""
    if expires_at <= issued_at:
        raise InputError("an index must expire after it is issued", "Give a positive --expires-in")
    latest: dict[tuple[str, str, str], dict[str, str]] = {}
    for data in manifests:
        manifest = json.loads(data)
        release = manifest["release"]
        entry = {"model": manifest["model"]["name"], "target": str(release["target"]), "channel": release["channel"],
                 "version": release["version"], "manifest_sha256": hashlib.sha256(data).hexdigest()}
        key = (entry["model"], entry["target"], entry["channel"])
        if key not in latest or parse_semver(entry["version"]) > parse_semver(latest[key]["version"]):
            latest[key] = entry
    body = {"type": TYPE, "issued_at": format_utc(issued_at), "expires_at": format_utc(expires_at),
            "releases": [latest[k] for k in sorted(latest)]}
    signature = json.loads(sign(canonical_bytes(body), private_key, certificate))
    return canonical_bytes({**body, "signature": signature}) + b"\n"


def load_index(path: Path, trusted: Trusted, now: float, threshold: int = 1) -> dict[str, Any]:
    """The index at ``path`` once its signature checks out and it has not expired; SecurityError otherwise."""
    try:
        if path.stat().st_size > _MAX_FILE:
            raise InputError(f"{path} is too large to be a release index", "Pass the file edgekit index wrote")
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"release index {path} does not exist", "Check the path") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a release index ({exc})", "Pass the file edgekit index wrote") from None
    if not isinstance(document, dict) or document.get("type") != TYPE or not isinstance(document.get("signature"), dict):
        raise InputError(f"{path} is not an edgekit release index", "Pass the file edgekit index wrote")
    body = {k: v for k, v in document.items() if k != "signature"}
    verify_signature(canonical_bytes(body), canonical_bytes(document["signature"]), trusted, now=now,
                     threshold=threshold)
    try:
        issued, expires = parse_utc(body["issued_at"]), parse_utc(body["expires_at"])
        releases = [dict(r) for r in body["releases"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise SecurityError(f"the release index is malformed ({exc})", _REFUSE) from None
    if not issued <= now < expires:
        raise SecurityError(f"the release index is valid from {body['issued_at']} to {body['expires_at']}, not now",
                            _REFUSE)
    return {**body, "releases": releases}


def latest(index: dict[str, Any], model: str, target: str, channel: str) -> dict[str, str] | None:
    """The index's entry for ``model`` on ``target`` / ``channel``, or None when it lists none."""
    for entry in index["releases"]:
        if (entry.get("model"), entry.get("target"), entry.get("channel")) == (model, target, channel):
            return entry
    return None


def behind(index: dict[str, Any], manifest: dict[str, Any], manifest_sha256: str) -> str | None:
    """Why ``manifest`` is not the release the index lists as current for it, or None when it is."""
    release = manifest["release"]
    entry = latest(index, manifest["model"]["name"], str(release["target"]), release["channel"])
    where = f"{manifest['model']['name']} on {release['target']} ({release['channel']})"
    if entry is None:
        return f"the release index lists no release of {where}"
    if parse_semver(release["version"]) < parse_semver(entry["version"]):
        return f"{release['version']} is older than {entry['version']}, the latest release of {where} in the index"
    if release["version"] == entry["version"] and manifest_sha256 != entry["manifest_sha256"]:
        return f"{release['version']} is not the release of that version the index lists (other contents)"
    return None
