"""Re-check the release a device is running: files, signature, certificate, expiry, revocation, age.

An install is checked once; what it installed can expire, have its signing
key revoked or its certificate run out, or be damaged on disk later.
``edgekit status --into STORE --key KEY`` answers "is what runs here still
trustworthy?" with one line per check; a failing check exits 1, so a
device's watchdog or fleet agent can act on it (roll back, fetch a release).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.release import revocation
from edgekit.release.manifest import MANIFEST_NAME
from edgekit.release.signing import SIGNATURE_NAME, Trusted, verify_signature
from edgekit.release.store import STATE_NAME, Store
from edgekit.release.timestamps import format_utc, parse_utc


@dataclass(frozen=True)
class StatusCheck:
    name: str
    ok: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "note": self.note}


def _signature(folder: Path, trusted: Trusted, now: float, threshold: int) -> tuple[StatusCheck, str | None]:
    try:
        key = verify_signature((folder / MANIFEST_NAME).read_bytes(), (folder / SIGNATURE_NAME).read_bytes(),
                               trusted, now=now, threshold=threshold)
    except OSError as exc:
        return StatusCheck("signature", False, f"cannot read the stored manifest or signature ({exc.strerror})"), None
    except InputError as exc:  # SecurityError included: untrusted key, expired certificate, changed manifest
        return StatusCheck("signature", False, exc.problem), None
    return StatusCheck("signature", True, f"signed by key {key[:16]}, trusted now"), key


def check_status(root: Path, trusted: Trusted, now: float | None = None, max_age_days: float | None = None,
                 threshold: int = 1, index_path: Path | None = None) -> dict[str, Any]:
    """The running release's checks; ``healthy`` when all pass. InputError when no model is installed.

    With ``index_path`` (a release index, ``edgekit.release.index``), the index
    must be signed, unexpired, and list the running release as current.
    """
    moment = time.time() if now is None else now
    if not (root / STATE_NAME).exists():
        raise InputError(f"no model is installed in {root}", "Pass the store you install into with --into")
    with Store.locked(root) as store:
        state = store.state()
        assert state is not None
        version = state["current"]["version"]
        folder = store.version_dir(version)
        checks = []
        try:
            manifest = store.check_version_intact(version)
            checks.append(StatusCheck("files", True, f"every file of {version} matches its signed sha256"))
        except InputError as exc:
            return _report(state, version, None, [StatusCheck("files", False, exc.problem)], None)
        signed, key = _signature(folder, trusted, moment, threshold)
        checks.append(signed)
        release = manifest["release"]
        expires = parse_utc(release["expires_at"])
        checks.append(StatusCheck("expiry", moment < expires, f"expires {release['expires_at']}"
                                  + ("" if moment < expires else " (expired: the publisher must re-sign or replace it)")))
        remembered = revocation.Revocations.from_state(state.get("revocations"))
        revoked = key is not None and remembered is not None and key in remembered.revoked
        checks.append(StatusCheck("revocation", not revoked,
                                  f"key revoked by list {remembered.serial}" if revoked else
                                  f"not revoked (list {remembered.serial if remembered else 'none seen'})"))
        if index_path is not None:
            checks.append(_index_check(index_path, trusted, moment, threshold, manifest,
                                       store.version_dir(version) / MANIFEST_NAME))
        if max_age_days is not None:
            age = (moment - parse_utc(release["issued_at"])) / 86_400
            checks.append(StatusCheck("freshness", age <= max_age_days,
                                      f"issued {release['issued_at']}, {age:.1f} days ago (limit {max_age_days:g})"))
        return _report(state, version, key, checks, release)


def _index_check(path: Path, trusted: Trusted, now: float, threshold: int, manifest: dict[str, Any],
                 stored: Path) -> StatusCheck:
    import hashlib

    from edgekit.release.index import behind, load_index

    try:
        index = load_index(path, trusted, now, threshold)
    except InputError as exc:  # SecurityError included: expired, untrusted, changed
        return StatusCheck("index", False, exc.problem)
    why = behind(index, manifest, hashlib.sha256(stored.read_bytes()).hexdigest())
    return StatusCheck("index", why is None, why or f"the current release per the index of {index['issued_at']}")


def _report(state: dict[str, Any], version: str, key: str | None, checks: list[StatusCheck],
            release: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "model": state["model"], "version": version, "key_id": key, "checked_at": format_utc(int(time.time())),
        "target": release["target"] if release else None, "channel": release["channel"] if release else None,
        "checks": [c.as_dict() for c in checks], "healthy": all(c.ok for c in checks),
    }
