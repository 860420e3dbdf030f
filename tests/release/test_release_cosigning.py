"""Threshold signing: a device that asks for K signers refuses a release one key signed alone."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from edgekit.release.archive import open_bundle


@pytest.fixture()
def signers(kit: ModuleType, tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    for name in ("alice", "bob", "carol", "mallory"):
        assert kit.run("keygen", "-o", folder, "--name", name, "--no-encrypt").exit_code == 0
    return folder


def _signed_by_alice(kit: ModuleType, tmp_path: Path, keys: Path) -> Path:
    build = kit.make_build(tmp_path / "build")
    made = kit.run("bundle", build, "--key", keys / "alice.key", "--version", "1.0.0", "-o", tmp_path / "out",
                   "-t", "raspberry-pi-4", "--json")
    assert made.exit_code == 0, made.stderr
    return Path(made.json()["bundles"][0]["path"])


def _trust(keys: Path, *names: str) -> list[object]:
    return [arg for name in names for arg in ("--key", keys / f"{name}.pub")]


def test_two_of_three_signers_are_required_and_enough(kit: ModuleType, tmp_path: Path, signers: Path) -> None:
    bundle = _signed_by_alice(kit, tmp_path, signers)
    council = _trust(signers, "alice", "bob", "carol")
    alone = kit.run("verify", bundle, *council, "--threshold", "2")
    assert alone.exit_code == 2 and "signed by 1 trusted key(s); this device requires 2" in alone.stderr

    with open_bundle(bundle) as reader:
        manifest_before = reader.read_head()[0]
    assert kit.run("cosign", bundle, "--key", signers / "mallory.key").exit_code == 0  # not on the council
    assert kit.run("verify", bundle, *council, "--threshold", "2").exit_code == 2
    assert kit.run("cosign", bundle, "--key", signers / "bob.key").exit_code == 0
    assert kit.run("verify", bundle, *council, "--threshold", "2").exit_code == 0
    assert kit.run("verify", bundle, *council, "--threshold", "3").exit_code == 2
    installed = kit.run("install", bundle, "--into", tmp_path / "store", *council, "--threshold", "2")
    assert installed.exit_code == 0, installed.stderr
    with open_bundle(bundle) as reader:
        manifest_after, signature = reader.read_head()
    assert manifest_after == manifest_before  # the release is the same; only its signatures grew
    assert len(json.loads(signature)["cosignatures"]) == 2  # mallory's and bob's

    again = kit.run("cosign", bundle, "--key", signers / "bob.key")
    assert again.exit_code == 2 and "has already signed" in again.stderr


def test_a_forged_cosignature_is_refused_not_ignored(kit: ModuleType, tmp_path: Path, signers: Path) -> None:
    from edgekit.release.manifest import canonical_bytes

    bundle = _signed_by_alice(kit, tmp_path, signers)
    assert kit.run("cosign", bundle, "--key", signers / "bob.key").exit_code == 0
    with open_bundle(bundle) as reader:
        manifest, signature = reader.read_head()
    document = json.loads(signature)
    document["cosignatures"][0]["sig"] = document["sig"]  # alice's signature presented as bob's
    from edgekit.errors import SecurityError
    from edgekit.release.signing import load_public_key, verify_signature

    council = [load_public_key(signers / f"{n}.pub") for n in ("alice", "bob")]
    with pytest.raises(SecurityError, match="changed after signing"):
        verify_signature(manifest, canonical_bytes(document), council, threshold=2)


def test_a_signature_file_must_be_canonical(kit: ModuleType, tmp_path: Path, signers: Path) -> None:
    from edgekit.errors import SecurityError
    from edgekit.release.signing import load_public_key, verify_signature

    bundle = _signed_by_alice(kit, tmp_path, signers)
    with open_bundle(bundle) as reader:
        manifest, signature = reader.read_head()
    spaced = json.dumps(json.loads(signature), indent=1).encode()  # same JSON, other bytes
    with pytest.raises(SecurityError, match="not in canonical form"):
        verify_signature(manifest, spaced, load_public_key(signers / "alice.pub"))
