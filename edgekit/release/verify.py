"""Device-side verification of a release bundle (stdlib + cryptography; no torch).

Order matters, and follows TUF: the signature is checked over the manifest's
exact bytes before anything in them is believed; then the JSON is parsed
strictly and must be the canonical form of itself (so no duplicate keys or
alternative spellings can make two parsers disagree about a signed
document); then the schema, the expiry, the version against the installed
one, and only then are artifact bytes read — each one against the size and
sha256 the signed manifest lists.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.artifact import sha256_file, size_bytes
from edgekit.errors import InputError, SecurityError
from edgekit.release.archive import FileEntry, open_bundle
from edgekit.release.manifest import canonical_bytes
from edgekit.release.schema import validate_manifest
from edgekit.release.revocation import Revocations, check_not_revoked, embedded, newest
from edgekit.release.signing import Trusted, verify_signature
from edgekit.release.timestamps import parse_utc
from edgekit.release.version import Version, parse_loose, parse_semver

_REFUSE = "Refuse this bundle and ask the publisher for a new one"


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, manifest and every file were checked."""

    manifest: dict[str, Any]
    manifest_bytes: bytes
    signature: bytes
    key_id: str
    sha256: str

    @property
    def model(self) -> str:
        return str(self.manifest["model"]["name"])

    @property
    def version(self) -> Version:
        return parse_semver(self.manifest["release"]["version"])

    @property
    def release(self) -> dict[str, Any]:
        return dict(self.manifest["release"])

    def summary(self) -> dict[str, Any]:
        """What a report (or --json) says about the bundle."""
        release = self.manifest["release"]
        return {
            "model": self.model,
            "version": release["version"],
            "channel": release["channel"],
            "target": release["target"],
            "rollout_percentage": release["rollout_percentage"],
            "rollback_to": release["rollback_to"],
            "min_app_version": release["min_app_version"],
            "issued_at": release["issued_at"],
            "expires_at": release["expires_at"],
            "key_id": self.key_id,
            "sha256": self.sha256,
            "artifacts": [
                {
                    k: a.get(k)
                    for k in (
                        "target",
                        "format",
                        "precision",
                        "path",
                        "sha256",
                        "size_bytes",
                        "runtime",
                        "min_runtime_version",
                        "passed",
                    )
                }
                for a in self.manifest["artifacts"]
            ],
        }


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_signed_manifest(manifest_bytes: bytes) -> dict[str, Any]:
    """Parse signed manifest bytes, insisting they are canonical JSON of an object."""
    try:
        document = json.loads(
            manifest_bytes.decode("utf-8"), object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise SecurityError(f"the signed manifest is not valid JSON ({exc})", _REFUSE) from None
    if not isinstance(document, dict) or canonical_bytes(document) != manifest_bytes:
        raise SecurityError("the signed manifest is not in canonical form", _REFUSE)
    return document


def check_manifest(
    manifest_bytes: bytes,
    signature: bytes | None,
    public_key: Trusted,
    *,
    now: float | None = None,
    installed: Version | None = None,
    allow_downgrade: bool = False,
    app_version: str | None = None,
    app_version_required: bool = False,
    revoked: Revocations | None = None,
    threshold: int = 1,
) -> tuple[dict[str, Any], str]:
    """Check a bundle's manifest and signature; return the manifest and the signing key's id.

    Refuses (SecurityError unless noted): no signature, a signature from
    another key, a changed manifest, a non-canonical manifest, one that fails
    the schema (InputError), an expired one, one issued for a version lower
    than ``installed`` (unless ``allow_downgrade``), and one that needs a newer
    app than ``app_version`` (or, with ``app_version_required``, states a
    minimum app version when ``app_version`` is not given: fails closed), and
    one signed by a key the newest revocation list names (``revoked``, or the
    list the bundle carries).
    """
    if signature is None:
        raise SecurityError("the bundle is not signed (it has no manifest.sig)", _REFUSE)
    key = verify_signature(manifest_bytes, signature, public_key, now=now, threshold=threshold)
    # The store's remembered list or the one the bundle carries, whichever is newer.
    check_not_revoked(key, newest(revoked, embedded(signature, public_key)))
    manifest = validate_manifest(parse_signed_manifest(manifest_bytes), what="the bundle's manifest", release=True)
    release = manifest["release"]
    issued, expires = parse_utc(release["issued_at"]), parse_utc(release["expires_at"])
    if expires <= issued:
        raise SecurityError(f"the manifest expires ({release['expires_at']}) before it was issued", _REFUSE)
    moment = time.time() if now is None else now
    if moment >= expires:
        raise SecurityError(
            f"the manifest expired at {release['expires_at']}",
            "Refuse it; ask the publisher to re-sign the release (edgekit bundle) and check the device clock",
        )
    version = parse_semver(release["version"])
    if installed is not None and version < installed and not allow_downgrade:
        raise SecurityError(
            f"bundle version {version} is lower than the installed version {installed} (a downgrade)",
            "Refuse it; if this rollback is intended, pass --allow-downgrade",
        )
    if app_version is None and app_version_required and release["min_app_version"] is not None:
        raise InputError(
            f"the release needs app version {release['min_app_version']} or later, and this install does not say "
            "which app version loads the model",
            "Pass --app-version VERSION (the version of the app on this device)",
        )
    if app_version is not None and release["min_app_version"] is not None:
        if parse_loose(app_version, "--app-version") < parse_loose(release["min_app_version"]):
            raise InputError(
                f"the release needs app version {release['min_app_version']} or later, this app is {app_version}",
                "Update the app first, then install the model",
            )
    _check_consistency(manifest)
    return manifest, key


def _check_consistency(manifest: dict[str, Any]) -> None:
    """Every artifact and report must be covered by ``files`` and match the bundle's target."""
    files: dict[str, Any] = manifest["files"]
    target = manifest["release"]["target"]
    for artifact in manifest["artifacts"]:
        if target is not None and artifact["target"] != target:
            raise SecurityError(f"bundle for target {target} lists an artifact for {artifact['target']}", _REFUSE)
        path = artifact["path"]
        if path not in files and not any(name.startswith(path + "/") for name in files):
            raise SecurityError(f"artifact {path} is not among the bundle's files", _REFUSE)
        if "report" in artifact and artifact["report"] not in files:
            raise SecurityError(f"report {artifact['report']} is not among the bundle's files", _REFUSE)


def file_entries(manifest: dict[str, Any]) -> dict[str, FileEntry]:
    """The manifest's ``files`` map as typed entries."""
    return {name: FileEntry(entry["sha256"], entry["size_bytes"]) for name, entry in manifest["files"].items()}


def check_artifacts(manifest: dict[str, Any], folder: Path) -> None:
    """Recheck each artifact (file or .mlpackage folder) in ``folder`` against its manifest hash and size."""
    for artifact in manifest["artifacts"]:
        path = folder.joinpath(*artifact["path"].split("/"))
        if not path.exists() or sha256_file(path) != artifact["sha256"] or size_bytes(path) != artifact["size_bytes"]:
            raise SecurityError(
                f"artifact {artifact['path']} does not match its sha256 or size in the manifest", _REFUSE
            )


def verify_bundle(
    bundle: Path,
    public_key: Trusted,
    destination: Path,
    *,
    now: float | None = None,
    installed: Version | None = None,
    allow_downgrade: bool = False,
    app_version: str | None = None,
    revoked: Revocations | None = None,
    threshold: int = 1,
) -> VerifiedBundle:
    """Verify ``bundle`` completely, extracting its files into the empty folder ``destination``.

    On any failure an EdgekitError is raised and ``destination`` may hold a
    partial extraction: the caller owns it and must remove it.
    """
    with open_bundle(bundle) as reader:
        manifest_bytes, signature = reader.read_head()
        manifest, key = check_manifest(
            manifest_bytes,
            signature,
            public_key,
            now=now,
            installed=installed,
            allow_downgrade=allow_downgrade,
            app_version=app_version,
            revoked=revoked,
            threshold=threshold,
        )
        reader.extract(file_entries(manifest), destination)
        check_artifacts(manifest, destination)
        return VerifiedBundle(manifest, manifest_bytes, signature or b"", key, reader.sha256)
