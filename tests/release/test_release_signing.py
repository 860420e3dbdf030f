"""edgekit keygen and the detached Ed25519 signature format."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from types import ModuleType

import pytest

from edgekit.errors import SecurityError
from edgekit.release.manifest import canonical_bytes
from edgekit.release.signing import key_id, load_private_key, load_public_key, sign, verify_signature


def test_keygen_writes_a_private_key_only_its_owner_can_read(kit: ModuleType, tmp_path: Path) -> None:
    outcome = kit.run("keygen", "-o", tmp_path / "keys", "--name", "fleet", "--no-encrypt", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    report = outcome.json()
    private, public = tmp_path / "keys" / "fleet.key", tmp_path / "keys" / "fleet.pub"
    assert report["private_key"] == str(private) and report["public_key"] == str(public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes() and b"BEGIN PUBLIC KEY" in public.read_bytes()
    assert report["key_id"] == key_id(load_public_key(public)) == key_id(load_private_key(private).public_key())
    assert report["encrypted"] is False
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["fleet.key", "fleet.pub"], "no temporaries left"


def test_keygen_never_overwrites_by_accident(kit: ModuleType, tmp_path: Path) -> None:
    first = kit.run("keygen", "-o", tmp_path, "--no-encrypt", "--json").json()["key_id"]
    again = kit.run("keygen", "-o", tmp_path, "--no-encrypt")
    assert again.exit_code == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert key_id(load_public_key(tmp_path / "edgekit.pub")) == first
    forced = kit.run("keygen", "-o", tmp_path, "--force", "--no-encrypt", "--json")
    assert forced.exit_code == 0 and forced.json()["key_id"] != first


def test_keygen_refuses_a_path_as_name(kit: ModuleType, tmp_path: Path) -> None:
    outcome = kit.run("keygen", "-o", tmp_path, "--name", "../escape", "--no-encrypt")
    assert outcome.exit_code == 2 and "not a plain file name" in outcome.stderr
    assert not (tmp_path.parent / "escape.key").exists()


def test_keygen_encrypts_with_a_prompted_passphrase(kit: ModuleType, tmp_path: Path) -> None:
    outcome = kit.run("keygen", "-o", tmp_path, "--encrypt", input="s3cret\ns3cret\n")
    assert outcome.exit_code == 0, outcome.stderr
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "edgekit.key").read_bytes()
    load_private_key(tmp_path / "edgekit.key", b"s3cret")


def test_keygen_encrypts_by_default_and_will_not_guess_a_passphrase(kit: ModuleType, tmp_path: Path) -> None:
    """Without a terminal to ask in (CI), an unencrypted key is written only when asked for by name."""
    refused = kit.run("keygen", "-o", tmp_path)
    assert refused.exit_code == 2 and "encrypts the private key by default" in refused.stderr
    assert "--no-encrypt" in refused.stderr and not any(tmp_path.iterdir())
    from_env = kit.run("keygen", "-o", tmp_path, "--passphrase-env", "PASS", "--json", env={"PASS": "horse"})
    assert from_env.exit_code == 0 and from_env.json()["encrypted"] is True
    assert kit.run("keygen", "-o", tmp_path, "--name", "x", "--no-encrypt", "--encrypt").exit_code == 2


def test_signature_roundtrip_and_refusals(tmp_path: Path, kit: ModuleType) -> None:
    kit.run("keygen", "-o", tmp_path, "--name", "a", "--no-encrypt")
    kit.run("keygen", "-o", tmp_path, "--name", "b", "--no-encrypt")
    key_a, pub_a, pub_b = (
        load_private_key(tmp_path / "a.key"),
        load_public_key(tmp_path / "a.pub"),
        load_public_key(tmp_path / "b.pub"),
    )
    message = canonical_bytes({"model": {"name": "m"}, "z": 1})
    signature = sign(message, key_a)
    assert sign(message, key_a) == signature, "Ed25519 is deterministic: bundles stay reproducible"
    document = json.loads(signature)
    assert document["alg"] == "ed25519" and document["keyid"] == key_id(pub_a)
    assert verify_signature(message, signature, pub_a) == key_id(pub_a)

    with pytest.raises(SecurityError, match="not by the trusted key"):
        verify_signature(message, signature, pub_b)
    with pytest.raises(SecurityError, match="changed after signing"):
        verify_signature(message.replace(b"1", b"2"), signature, pub_a)
    # A forged keyid changes nothing: only the math decides.
    lying = canonical_bytes({**document, "keyid": key_id(pub_b)})
    assert verify_signature(message, lying, pub_a) == key_id(pub_a)
    for malformed in (b"", b"not json", canonical_bytes({**document, "sig": "***"}),
                      canonical_bytes({**document, "sig": base64.b64encode(b"short").decode()}),
                      canonical_bytes({**document, "alg": "rsa"})):  # fmt: skip
        with pytest.raises(SecurityError, match="malformed"):
            verify_signature(message, malformed, pub_a)


def test_key_files_that_are_not_keys_are_refused(kit: ModuleType, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    outcome = kit.run("verify", tmp_path / "x.tar.gz", "--key", junk)
    assert outcome.exit_code == 2 and "not a PEM public key" in outcome.stderr
    missing = kit.run("verify", tmp_path / "x.tar.gz", "--key", tmp_path / "nope.pub")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
