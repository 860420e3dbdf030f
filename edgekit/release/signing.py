"""Ed25519 keys and detached signatures over canonical manifest bytes.

Keys are PEM files: the private key PKCS#8 (optionally passphrase-encrypted),
the public key SubjectPublicKeyInfo. A key's id is the sha256 of its raw 32
public bytes, so a signature can say which key made it and a refusal can name
both keys. The signature file is canonical JSON::

    {"alg": "ed25519", "keyid": "<64 hex>", "sig": "<base64 of 64 bytes>"}

Ed25519 signatures are deterministic, which keeps bundles reproducible.
The keyid in a signature file is a hint for error messages, never trusted:
only the signature check against the keys the caller trusts decides.

Rotation without a flag-day (TUF's root role, simplified): devices may trust
a *root* key that never signs releases. It certifies release keys with a
short-lived certificate (``certify``), which ``sign`` embeds in the
signature file as ``cert``::

    {"type": "edgekit-key-certificate", "key": "<base64 raw public key>", "keyid": "<64 hex>",
     "issued_at": "...Z", "expires_at": "...Z", "root_keyid": "<64 hex>", "sig": "<root signature>"}

A signature verifies when its key is trusted directly, or when its
certificate is signed by a trusted key and unexpired. A new release key
needs only a new certificate; a compromised one stops verifying when its
certificate expires (or at once on devices that drop trust in its root).
Several trusted keys may be given during a transition.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

from edgekit.errors import InputError, OutputError, SecurityError
from edgekit.release.manifest import canonical_bytes

if TYPE_CHECKING:  # cryptography loads only when a key is used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_NAME = "manifest.sig"
ALGORITHM = "ed25519"
CERTIFICATE_TYPE = "edgekit-key-certificate"
MAX_COSIGNATURES = 16
_MAX_KEY_FILE = 64 * 1024

# One trusted key, or several (a root and a release key during a rotation, say).
Trusted = Union["Ed25519PublicKey", Sequence["Ed25519PublicKey"]]


def key_id(public_key: Ed25519PublicKey) -> str:
    """Hex sha256 of the raw public key bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class KeyPair:
    """Paths of a freshly written key pair and the key's id."""

    private: Path
    public: Path
    key_id: str


def generate_keypair(folder: Path, name: str, passphrase: bytes | None = None, overwrite: bool = False) -> KeyPair:
    """Write ``folder/name.key`` (mode 0600) and ``folder/name.pub``; refuse to overwrite unless asked.

    The private key is encrypted with the best scheme cryptography offers when
    ``passphrase`` is given. Both files appear atomically.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pub"
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise OutputError(
                    f"{path} already exists", "Choose another --name or folder, or pass --force to replace it"
                )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create {folder}: {exc.strerror or exc}", "Choose a folder you can write to with -o"
        ) from None
    key = Ed25519PrivateKey.generate()
    encryption: Any = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_key_file(private_path, private_pem, 0o600)
    _write_key_file(public_path, public_pem, 0o644)
    return KeyPair(private_path, public_path, key_id(key.public_key()))


def _write_key_file(path: Path, data: bytes, mode: int) -> None:
    # The temporary is created with the final mode (never world-readable, even
    # for an instant), fsynced, then renamed into place.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(
            f"cannot write {path}: {exc.strerror or exc}", "Choose a folder you can write to with -o"
        ) from None


def _read_key_file(path: Path, kind: str) -> bytes:
    try:
        if path.stat().st_size > _MAX_KEY_FILE:
            raise InputError(
                f"{path} is too large to be a {kind} key", f"Pass the {kind} key file written by edgekit keygen"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"{kind} key {path} does not exist", "Check the path, or create a key pair with edgekit keygen"
        ) from None
    except OSError as exc:
        raise InputError(
            f"cannot read {kind} key {path}: {exc.strerror or exc}", "Check the file's permissions"
        ) from None


def private_key_is_encrypted(path: Path) -> bool:
    """True if the PEM private key at ``path`` needs a passphrase."""
    return b"ENCRYPTED PRIVATE KEY" in _read_key_file(path, "private")


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Load an Ed25519 private key, or raise InputError saying what is wrong with it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path, "private")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError:
        if passphrase:
            raise InputError(
                f"private key {path} is not encrypted but a passphrase was given", "Drop the passphrase"
            ) from None
        raise InputError(f"private key {path} is encrypted", "Give its passphrase with --passphrase-env VAR") from None
    except ValueError:
        if passphrase:
            raise InputError(
                f"cannot decrypt private key {path}", "Check the passphrase (wrong passphrase or not a key file)"
            ) from None
        raise InputError(f"{path} is not a PEM private key", "Pass the .key file written by edgekit keygen") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"private key {path} is not an Ed25519 key", "Create one with edgekit keygen")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load an Ed25519 public key, or raise InputError saying what is wrong with it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path, "public")
    if b"PRIVATE KEY" in data:
        raise InputError(
            f"{path} is a private key", "Give devices only the .pub file; keep the .key file on the signing host"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise InputError(f"{path} is not a PEM public key", "Pass the .pub file written by edgekit keygen") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"public key {path} is not an Ed25519 key", "Pass the .pub file written by edgekit keygen")
    return key


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def certify(root: Ed25519PrivateKey, release: Ed25519PublicKey, issued_at: int, expires_at: int) -> dict[str, str]:
    """A certificate, signed by ``root``, that ``release`` may sign releases from ``issued_at`` to ``expires_at``."""
    from edgekit.release.timestamps import format_utc

    if expires_at <= issued_at:
        raise InputError("a key certificate must expire after it is issued", "Give a positive --expires-in")
    body = {"type": CERTIFICATE_TYPE, "key": base64.b64encode(_raw_public(release)).decode("ascii"),
            "keyid": key_id(release), "issued_at": format_utc(issued_at), "expires_at": format_utc(expires_at),
            "root_keyid": key_id(root.public_key())}
    return {**body, "sig": base64.b64encode(root.sign(canonical_bytes(body))).decode("ascii")}


def load_certificate(path: Path) -> dict[str, str]:
    """A key certificate written by ``edgekit certify`` (checked for shape; devices check its signature)."""
    data = _read_key_file(path, "certificate")
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path} is not a key certificate (not JSON)", "Pass the .cert file edgekit certify wrote") from None
    fields = ("type", "key", "keyid", "issued_at", "expires_at", "root_keyid", "sig")
    if not isinstance(document, dict) or document.get("type") != CERTIFICATE_TYPE or \
            not all(isinstance(document.get(k), str) for k in fields):
        raise InputError(f"{path} is not an edgekit key certificate", "Pass the .cert file edgekit certify wrote")
    return {k: document[k] for k in fields}


def write_certificate(path: Path, certificate: dict[str, str]) -> None:
    """Write ``certificate`` as canonical JSON, atomically."""
    _write_key_file(path, canonical_bytes(certificate) + b"\n", 0o644)


def sign(manifest_bytes: bytes, private_key: Ed25519PrivateKey, certificate: dict[str, str] | None = None,
         revocations: dict[str, Any] | None = None) -> bytes:
    """The signature file's bytes for ``manifest_bytes``, with the signing key's certificate and the root's
    revocation list (``edgekit.release.revocation``) when given."""
    if certificate is not None and certificate.get("keyid") != key_id(private_key.public_key()):
        raise InputError("the certificate is for another key than the signing key",
                         "Pass the certificate edgekit certify made for this --key")
    signature = private_key.sign(manifest_bytes)
    document = {
        "alg": ALGORITHM,
        "keyid": key_id(private_key.public_key()),
        "sig": base64.b64encode(signature).decode("ascii"),
        **({"cert": certificate} if certificate is not None else {}),
        **({"revoked": revocations} if revocations is not None else {}),
    }
    return canonical_bytes(document)


def _refused_signature(reason: str) -> SecurityError:
    return SecurityError(f"the bundle's signature file is malformed ({reason})",
                         "Refuse this bundle; ask the publisher for a bundle made with edgekit bundle")


@dataclass(frozen=True)
class _Entry:
    """One signature in a signature file: the primary, or a co-signature (threshold signing)."""

    claimed_id: str
    raw: bytes
    certificate: dict[str, Any] | None


def _entry(document: Any) -> _Entry:
    if not isinstance(document, dict):
        raise ValueError("a signature is not an object")
    raw = base64.b64decode(str(document["sig"]), validate=True)
    if len(raw) != 64:
        raise ValueError("an Ed25519 signature is 64 bytes")
    certificate = document.get("cert")
    if certificate is not None and not isinstance(certificate, dict):
        raise ValueError("cert is not an object")
    return _Entry(str(document.get("keyid", "")), raw, certificate)


def _parse_signature(signature_bytes: bytes) -> list[_Entry]:
    """The signatures of a signature file, the primary first; it must be canonical JSON."""
    try:
        document = json.loads(signature_bytes.decode("utf-8"))
        if not isinstance(document, dict) or document.get("alg") != ALGORITHM:
            raise ValueError("not an ed25519 signature document")
        if canonical_bytes(document) != signature_bytes:
            raise ValueError("not in canonical form, so two readers could see different files")
        cosignatures = document.get("cosignatures", [])
        if not isinstance(cosignatures, list) or len(cosignatures) > MAX_COSIGNATURES:
            raise ValueError(f"cosignatures is not a list of at most {MAX_COSIGNATURES}")
        return [_entry(document), *(_entry(c) for c in cosignatures)]
    except (ValueError, KeyError, UnicodeDecodeError, binascii.Error) as exc:
        raise _refused_signature(str(exc)) from None


def _certified_key(certificate: dict[str, Any], trusted: dict[str, Ed25519PublicKey], now: float) -> Ed25519PublicKey:
    """The release key a certificate vouches for, once its root signature, type and dates check out."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edgekit.release.timestamps import parse_utc

    body = {k: v for k, v in certificate.items() if k != "sig"}
    try:
        root = trusted.get(str(body["root_keyid"]))
        if root is None:
            raise SecurityError(
                f"the signing key is certified by key {str(body['root_keyid'])[:16]}, which this device does not trust",
                "Refuse this bundle, or pass the right root key with --key")
        root.verify(base64.b64decode(str(certificate["sig"]), validate=True), canonical_bytes(body))
        if body["type"] != CERTIFICATE_TYPE:
            raise ValueError(f"certificate type {body['type']!r}")
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(str(body["key"]), validate=True))
        issued, expires = parse_utc(str(body["issued_at"])), parse_utc(str(body["expires_at"]))
    except InvalidSignature:
        raise SecurityError("the signing key's certificate is not signed by the root key it names (it was changed)",
                            "Refuse this bundle; only the root key can certify release keys") from None
    except (ValueError, KeyError, TypeError, binascii.Error, InputError) as exc:
        raise _refused_signature(f"bad key certificate: {exc}") from None
    if key_id(key) != body["keyid"]:
        raise _refused_signature("the certificate's keyid is not its key's")
    if not issued <= now < expires:
        raise SecurityError(
            f"the signing key's certificate is valid from {body['issued_at']} to {body['expires_at']}, not now",
            "Refuse this bundle; the publisher must certify its release key again (edgekit certify)")
    return key


def _signer(entry: _Entry, manifest_bytes: bytes, by_id: dict[str, Ed25519PublicKey], now: float) -> str | None:
    """The id of the trusted (or certified) key that made ``entry``; None when no trusted key vouches for it.

    Raises SecurityError when a trusted key's signature does not match (the
    manifest was changed) or a certificate is forged or expired.
    """
    from cryptography.exceptions import InvalidSignature

    if entry.claimed_id in by_id:
        key = by_id[entry.claimed_id]
    elif entry.certificate is not None:
        key = _certified_key(entry.certificate, by_id, now)
        if key_id(key) != entry.claimed_id:
            raise _refused_signature("the certificate is for another key than the signature's")
    else:  # the keyid is only a hint: a trusted key whose signature checks out is accepted whatever it claims
        for candidate_id, candidate in by_id.items():
            try:
                candidate.verify(entry.raw, manifest_bytes)
                return candidate_id
            except InvalidSignature:
                continue
        return None
    try:
        key.verify(entry.raw, manifest_bytes)
    except InvalidSignature:
        raise SecurityError(
            "the manifest's signature does not match its contents (the manifest was changed after signing)",
            "Refuse this bundle and fetch it again from the publisher",
        ) from None
    return key_id(key)


def verify_signature(manifest_bytes: bytes, signature_bytes: bytes, trusted: Trusted, now: float | None = None,
                     threshold: int = 1) -> str:
    """Check ``signature_bytes`` over ``manifest_bytes``; return the id of the key that made the primary signature.

    Each signature's key must be one of ``trusted``, or be certified by one of
    them (an unexpired certificate in the signature file). With ``threshold``
    k > 1, k distinct trusted keys must have signed (the primary and
    co-signatures; an untrusted co-signer does not count). Raises
    SecurityError for a malformed or non-canonical signature file, an
    untrusted or uncertified key, an expired or forged certificate, a manifest
    changed after signing, and too few signers.
    """
    import time

    keys = [trusted] if not isinstance(trusted, Sequence) else list(trusted)
    by_id = {key_id(k): k for k in keys}
    moment = time.time() if now is None else now
    primary, *cosignatures = _parse_signature(signature_bytes)
    signer = _signer(primary, manifest_bytes, by_id, moment)
    if signer is None:
        names = ", ".join(k[:16] for k in by_id)
        raise SecurityError(f"the manifest is signed by key {primary.claimed_id[:16]}, not by the trusted key {names}",
                            "Refuse this bundle, or pass the right public key with --key")
    if threshold > 1:
        signers = {signer} | {s for entry in cosignatures if (s := _signer(entry, manifest_bytes, by_id, moment))}
        if len(signers) < threshold:
            raise SecurityError(
                f"the release is signed by {len(signers)} trusted key(s); this device requires {threshold}",
                "Refuse this bundle; ask the publisher for one co-signed by enough keys (edgekit cosign)")
    return signer


def cosign(signature_bytes: bytes, manifest_bytes: bytes, private_key: Ed25519PrivateKey,
           certificate: dict[str, str] | None = None) -> bytes:
    """``signature_bytes`` with a co-signature of ``manifest_bytes`` by ``private_key`` added (threshold signing)."""
    document = json.loads(signature_bytes.decode("utf-8"))
    mine = key_id(private_key.public_key())
    present = [document.get("keyid")] + [c.get("keyid") for c in document.get("cosignatures", [])]
    if mine in present:
        raise InputError(f"key {mine[:16]} has already signed this release", "Co-sign with another key")
    if certificate is not None and certificate.get("keyid") != mine:
        raise InputError("the certificate is for another key than the signing key",
                         "Pass the certificate edgekit certify made for this --key")
    entry = {"keyid": mine, "sig": base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"),
             **({"cert": certificate} if certificate is not None else {})}
    if len(present) > MAX_COSIGNATURES:
        raise InputError(f"a release carries at most {MAX_COSIGNATURES} co-signatures", "Co-sign with fewer keys")
    return canonical_bytes({**document, "cosignatures": [*document.get("cosignatures", []), entry]})
