"""Threshold signing: a second (third, ...) key co-signs a bundle another key signed.

Two people or two systems sign a release apart: the first makes the bundle
(``edgekit bundle``), each further signer adds a co-signature of the same
manifest bytes to ``manifest.sig`` (``edgekit cosign``). Devices that ask for
``--threshold K`` accept a release only when K distinct trusted (or
certified) keys signed it, so one stolen key cannot ship a release alone.
The files and the manifest are unchanged, so a device that installed the
release before it was co-signed sees the same release.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.artifact import sha256_file, size_bytes
from edgekit.errors import OutputError, SecurityError
from edgekit.release.archive import open_bundle, write_bundle
from edgekit.release.bundle import BundleResult
from edgekit.release.manifest import MANIFEST_NAME
from edgekit.release.schema import validate_manifest
from edgekit.release.signing import SIGNATURE_NAME, cosign
from edgekit.release.timestamps import parse_utc
from edgekit.release.verify import file_entries, parse_signed_manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def cosign_bundle(bundle: Path, private_key: Ed25519PrivateKey, destination: Path,
                  certificate: dict[str, str] | None = None) -> BundleResult:
    """Write ``bundle`` with a co-signature by ``private_key`` added to ``destination`` (atomically; may be ``bundle``).

    Every file is checked against the manifest's hashes on the way through,
    so a co-signer never vouches for bytes the manifest does not describe.
    """
    with open_bundle(bundle) as reader, tempfile.TemporaryDirectory(prefix="edgekit-cosign-") as scratch:
        manifest_bytes, signature = reader.read_head()
        if signature is None:
            raise SecurityError(f"{bundle} is not signed, so there is nothing to co-sign",
                                "Sign it first with edgekit bundle")
        manifest = validate_manifest(parse_signed_manifest(manifest_bytes), what="the bundle's manifest", release=True)
        files = file_entries(manifest)
        reader.extract(files, Path(scratch))
        entries: list[tuple[str, bytes | Path]] = [
            (MANIFEST_NAME, manifest_bytes),
            (SIGNATURE_NAME, cosign(signature, manifest_bytes, private_key, certificate)),
            *sorted((name, Path(scratch).joinpath(*name.split("/"))) for name in files),
        ]
        try:
            write_bundle(destination, entries, parse_utc(manifest["release"]["issued_at"]))
        except OSError as exc:
            raise OutputError(f"cannot write {destination}: {exc.strerror or exc}", "Choose a folder you can write to") \
                from None
    release = manifest["release"]
    return BundleResult(destination, release["target"], release["version"], sha256_file(destination),
                        size_bytes(destination), len(manifest["artifacts"]))
