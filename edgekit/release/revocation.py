"""Revoking a release key: a numbered list of key ids, signed by the root, that devices remember.

``edgekit revoke KEYID... --root ROOT.key --serial N`` writes the list;
``edgekit bundle --revocations FILE`` carries it inside ``manifest.sig`` (as
``revoked``) to every device that installs the next release. A device checks
the list's root signature against the keys it trusts, refuses any release
signed by a key on it, and keeps the highest-numbered list it has seen in
``state.json``, so a bundle that leaves the list out (an old bundle replayed
by an attacker) is still refused; ``edgekit status`` reports a running
release whose key was revoked. Format (canonical JSON)::

    {"type": "edgekit-revocations", "serial": 3, "issued_at": "...Z", "revoked": ["<64 hex>", ...],
     "root_keyid": "<64 hex>", "sig": "<root signature over the rest>"}
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError, SecurityError
from edgekit.release.manifest import canonical_bytes
from edgekit.release.signing import Trusted, key_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TYPE = "edgekit-revocations"
_FIELDS = ("type", "serial", "issued_at", "revoked", "root_keyid", "sig")
_MAX_FILE = 1 << 20


@dataclass(frozen=True)
class Revocations:
    """A verified revocation list: what a device remembers."""

    serial: int
    revoked: frozenset[str]
    root_keyid: str
    issued_at: str

    def as_dict(self) -> dict[str, Any]:
        return {"serial": self.serial, "revoked": sorted(self.revoked), "root_keyid": self.root_keyid,
                "issued_at": self.issued_at}

    @classmethod
    def from_state(cls, record: Any) -> Revocations | None:
        """The list a store remembers (None when it has none or the record is not one)."""
        if not isinstance(record, dict):
            return None
        try:
            return cls(int(record["serial"]), frozenset(map(str, record["revoked"])), str(record["root_keyid"]),
                       str(record["issued_at"]))
        except (KeyError, TypeError, ValueError):
            return None


def make(root: Ed25519PrivateKey, keyids: Sequence[str], serial: int, issued_at: int) -> dict[str, Any]:
    """A revocation list of ``keyids``, numbered ``serial``, signed by ``root``."""
    from edgekit.release.timestamps import format_utc

    bad = [k for k in keyids if len(k) != 64 or any(c not in "0123456789abcdef" for c in k)]
    if bad:
        raise InputError(f"{bad[0]!r} is not a key id (64 lowercase hex digits)",
                         "Give the key ids verify prints or the install log records")
    body = {"type": TYPE, "serial": serial, "issued_at": format_utc(issued_at), "revoked": sorted(set(keyids)),
            "root_keyid": key_id(root.public_key())}
    return {**body, "sig": base64.b64encode(root.sign(canonical_bytes(body))).decode("ascii")}


def load(path: Path) -> dict[str, Any]:
    """A revocation list file (shape checked; devices check its signature)."""
    try:
        if path.stat().st_size > _MAX_FILE:
            raise InputError(f"{path} is too large to be a revocation list", "Pass the file edgekit revoke wrote")
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"revocation list {path} does not exist", "Check the path") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a revocation list ({exc})", "Pass the file edgekit revoke wrote") from None
    if not isinstance(document, dict) or document.get("type") != TYPE or set(document) != set(_FIELDS):
        raise InputError(f"{path} is not an edgekit revocation list", "Pass the file edgekit revoke wrote")
    return document


def verified(document: Any, trusted: Trusted) -> Revocations:
    """The list in ``document`` once its signature checks out against a trusted key; SecurityError otherwise."""
    from cryptography.exceptions import InvalidSignature

    keys = {key_id(k): k for k in ([trusted] if not isinstance(trusted, Sequence) else trusted)}
    try:
        body = {k: document[k] for k in _FIELDS if k != "sig"}
        root = keys.get(str(body["root_keyid"]))
        if root is None:
            raise SecurityError(
                f"the revocation list is signed by key {str(body['root_keyid'])[:16]}, which this device does not trust",
                "Refuse this bundle; only a trusted root can revoke keys")
        root.verify(base64.b64decode(str(document["sig"]), validate=True), canonical_bytes(body))
        if body["type"] != TYPE or not isinstance(body["serial"], int) or not isinstance(body["revoked"], list):
            raise ValueError("not a revocation list")
        return Revocations(body["serial"], frozenset(map(str, body["revoked"])), str(body["root_keyid"]),
                           str(body["issued_at"]))
    except InvalidSignature:
        raise SecurityError("the revocation list's signature does not match it (it was changed)",
                            "Refuse this bundle; only the root can revoke keys") from None
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise SecurityError(f"the revocation list is malformed ({exc})",
                            "Refuse this bundle; ask the publisher for one made with edgekit revoke") from None


def embedded(signature_bytes: bytes | None, trusted: Trusted) -> Revocations | None:
    """The verified list a bundle's signature file carries, or None when it carries none."""
    if not signature_bytes:
        return None
    try:
        document = json.loads(signature_bytes.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None  # the signature check reports a malformed file
    if not isinstance(document, dict) or "revoked" not in document:
        return None
    return verified(document["revoked"], trusted)


def newest(*lists: Revocations | None) -> Revocations | None:
    """The highest-numbered of ``lists`` (a device never goes back to an older list)."""
    present = [r for r in lists if r is not None]
    return max(present, key=lambda r: r.serial) if present else None


def check_not_revoked(signer: str, lists: Revocations | None) -> None:
    """Refuse a release signed by a key on the newest list."""
    if lists is not None and signer in lists.revoked:
        raise SecurityError(
            f"the release is signed by key {signer[:16]}, which the root revoked (revocation list {lists.serial}, "
            f"{lists.issued_at})",
            "Refuse this bundle; ask the publisher for a release signed by a current key",
        )
