"""Ed25519 keys and detached signatures over canonical manifest bytes.

Keys are PEM files: the private key PKCS#8 (optionally passphrase-encrypted),
the public key SubjectPublicKeyInfo. A key's id is the sha256 of its raw 32
public bytes, so a signature can say which key made it and a refusal can name
both keys. The signature file is canonical JSON::

    {"alg": "ed25519", "keyid": "<64 hex>", "sig": "<base64 of 64 bytes>"}

Ed25519 signatures are deterministic, which keeps bundles reproducible.
The keyid in a signature file is a hint for error messages, never trusted:
only the signature check against the key the caller supplies decides.
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
from typing import TYPE_CHECKING, Any

from edgekit.errors import InputError, OutputError, SecurityError
from edgekit.release.manifest import canonical_bytes

if TYPE_CHECKING:  # cryptography loads only when a key is used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_NAME = "manifest.sig"
ALGORITHM = "ed25519"
_MAX_KEY_FILE = 64 * 1024


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


def sign(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The signature file's bytes for ``manifest_bytes``."""
    signature = private_key.sign(manifest_bytes)
    document = {
        "alg": ALGORITHM,
        "keyid": key_id(private_key.public_key()),
        "sig": base64.b64encode(signature).decode("ascii"),
    }
    return canonical_bytes(document)


def verify_signature(manifest_bytes: bytes, signature_bytes: bytes, public_key: Ed25519PublicKey) -> str:
    """Check ``signature_bytes`` over ``manifest_bytes`` with ``public_key``; return the key id.

    Raises SecurityError for a malformed signature file, a signature made by
    another key, or a manifest changed after signing.
    """
    from cryptography.exceptions import InvalidSignature

    expected_id = key_id(public_key)
    try:
        document = json.loads(signature_bytes.decode("utf-8"))
        if not isinstance(document, dict) or document.get("alg") != ALGORITHM:
            raise ValueError("not an ed25519 signature document")
        claimed_id = str(document.get("keyid", ""))
        raw = base64.b64decode(str(document["sig"]), validate=True)
        if len(raw) != 64:
            raise ValueError("an Ed25519 signature is 64 bytes")
    except (ValueError, KeyError, UnicodeDecodeError, binascii.Error) as exc:
        raise SecurityError(
            f"the bundle's signature file is malformed ({exc})",
            "Refuse this bundle; ask the publisher for a bundle made with edgekit bundle",
        ) from None
    try:
        public_key.verify(raw, manifest_bytes)
    except InvalidSignature:
        if claimed_id != expected_id:
            raise SecurityError(
                f"the manifest is signed by key {claimed_id[:16]}, not by the trusted key {expected_id[:16]}",
                "Refuse this bundle, or pass the right public key with --key",
            ) from None
        raise SecurityError(
            "the manifest's signature does not match its contents (the manifest was changed after signing)",
            "Refuse this bundle and fetch it again from the publisher",
        ) from None
    return expected_id
