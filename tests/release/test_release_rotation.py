"""Key rotation without a flag-day: devices trust a root key that certifies release keys."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture()
def keyring(kit: ModuleType, tmp_path: Path) -> Path:
    """root, release-a and release-b key pairs; a and b certified by the root (intruder: another root)."""
    folder = tmp_path / "keys"
    for name in ("root", "release-a", "release-b", "intruder"):
        assert kit.run("keygen", "-o", folder, "--name", name, "--no-encrypt").exit_code == 0
    for name in ("release-a", "release-b"):
        made = kit.run("certify", folder / f"{name}.pub", "--root", folder / "root.key", "-o", folder / f"{name}.cert")
        assert made.exit_code == 0, made.stderr
    return folder


def _bundle(kit: ModuleType, tmp_path: Path, keys: Path, signer: str, version: str, *extra: object) -> Path:
    build = kit.make_build(tmp_path / f"build-{version}", seed=version, version=version)
    made = kit.run("bundle", build, "--key", keys / f"{signer}.key", "--version", version, "-o", tmp_path / "out",
                   "-t", "raspberry-pi-4", "--json", *extra)
    assert made.exit_code == 0, made.stderr
    return Path(made.json()["bundles"][0]["path"])


def test_a_new_release_key_needs_no_change_on_the_device(kit: ModuleType, tmp_path: Path, keyring: Path) -> None:
    store = tmp_path / "store"
    first = _bundle(kit, tmp_path, keyring, "release-a", "1.0.0", "--cert", keyring / "release-a.cert")
    second = _bundle(kit, tmp_path, keyring, "release-b", "1.1.0", "--cert", keyring / "release-b.cert")
    for bundle in (first, second):  # the device trusts only the root, before and after the rotation
        done = kit.run("install", bundle, "--into", store, "--key", keyring / "root.pub", "--json")
        assert done.exit_code == 0 and done.json()["status"] == "installed", done.stderr
    log = [json.loads(line) for line in (store / "install.log").read_text().splitlines()]
    signers = [entry["key_id"] for entry in log]
    assert len(set(signers)) == 2  # which key signed each release is on record


def test_an_uncertified_release_key_is_not_trusted_by_a_root_device(kit: ModuleType, tmp_path: Path,
                                                                    keyring: Path) -> None:
    bare = _bundle(kit, tmp_path, keyring, "release-a", "1.0.0")
    refused = kit.run("verify", bare, "--key", keyring / "root.pub")
    assert refused.exit_code == 2 and "not by the trusted key" in refused.stderr


def test_an_expired_certificate_is_refused(kit: ModuleType, tmp_path: Path, keyring: Path) -> None:
    # The conftest's SOURCE_DATE_EPOCH is three days ago: a one-day certificate issued then has expired.
    short = keyring / "short.cert"
    assert kit.run("certify", keyring / "release-a.pub", "--root", keyring / "root.key", "--expires-in", "1",
                   "-o", short).exit_code == 0
    bundle = _bundle(kit, tmp_path, keyring, "release-a", "1.0.0", "--cert", short)
    refused = kit.run("verify", bundle, "--key", keyring / "root.pub")
    assert refused.exit_code == 2 and "certificate is valid from" in refused.stderr and "not now" in refused.stderr


def test_a_certificate_from_another_root_or_edited_is_refused(kit: ModuleType, tmp_path: Path, keyring: Path) -> None:
    foreign = keyring / "foreign.cert"
    assert kit.run("certify", keyring / "release-a.pub", "--root", keyring / "intruder.key", "-o", foreign).exit_code == 0
    bundle = _bundle(kit, tmp_path / "foreign", keyring, "release-a", "1.0.0", "--cert", foreign)
    refused = kit.run("verify", bundle, "--key", keyring / "root.pub")
    assert refused.exit_code == 2 and "which this device does not trust" in refused.stderr

    edited = json.loads((keyring / "release-a.cert").read_text())
    edited["expires_at"] = "2099-01-01T00:00:00Z"  # stretch the validity without the root
    forged = keyring / "forged.cert"
    forged.write_text(json.dumps(edited))
    bundle = _bundle(kit, tmp_path / "forged", keyring, "release-a", "1.0.0", "--cert", forged)
    refused = kit.run("verify", bundle, "--key", keyring / "root.pub")
    assert refused.exit_code == 2 and "not signed by the root key it names" in refused.stderr


def test_a_certificate_for_another_key_cannot_be_bundled(kit: ModuleType, tmp_path: Path, keyring: Path) -> None:
    build = kit.make_build(tmp_path / "build")
    refused = kit.run("bundle", build, "--key", keyring / "release-a.key", "--version", "1.0.0", "-o", tmp_path / "o",
                      "--cert", keyring / "release-b.cert")
    assert refused.exit_code == 2 and "certificate is for another key" in refused.stderr


def test_several_trusted_keys_cover_a_direct_rotation(kit: ModuleType, tmp_path: Path, keyring: Path) -> None:
    old = _bundle(kit, tmp_path, keyring, "release-a", "1.0.0")
    new = _bundle(kit, tmp_path, keyring, "release-b", "1.1.0")
    trust: list[Any] = ["--key", keyring / "release-a.pub", "--key", keyring / "release-b.pub"]
    assert kit.run("verify", old, *trust).exit_code == 0
    assert kit.run("verify", new, *trust).exit_code == 0
    assert kit.run("verify", new, "--key", keyring / "release-a.pub").exit_code == 2


# -- revocation and the running release -------------------------------------------------------------------------------


def _key_id(kit: ModuleType, keyring: Path, name: str) -> str:
    from edgekit.release.signing import key_id, load_public_key

    return key_id(load_public_key(keyring / f"{name}.pub"))


def test_a_revoked_key_is_refused_from_then_on_even_without_the_list(kit: ModuleType, tmp_path: Path,
                                                                     keyring: Path) -> None:
    store = tmp_path / "store"
    root = ("--key", keyring / "root.pub")
    by_a = _bundle(kit, tmp_path / "a", keyring, "release-a", "1.0.0", "--cert", keyring / "release-a.cert")
    assert kit.run("install", by_a, "--into", store, *root).exit_code == 0
    assert kit.run("status", "--into", store, *root).exit_code == 0

    # Key a leaks: the root revokes it, and the next release (signed by b) carries the list.
    revoked = tmp_path / "revoked.json"
    made = kit.run("revoke", _key_id(kit, keyring, "release-a"), "--root", keyring / "root.key", "--serial", "1",
                   "-o", revoked)
    assert made.exit_code == 0, made.stderr
    by_b = _bundle(kit, tmp_path / "b", keyring, "release-b", "1.1.0", "--cert", keyring / "release-b.cert",
                   "--revocations", revoked)
    assert kit.run("install", by_b, "--into", store, *root).exit_code == 0
    assert json.loads((store / "state.json").read_text())["revocations"]["serial"] == 1

    # An attacker's release signed with the leaked key, without the list: the device remembers.
    leaked = _bundle(kit, tmp_path / "leak", keyring, "release-a", "1.2.0", "--cert", keyring / "release-a.cert")
    refused = kit.run("install", leaked, "--into", store, *root)
    assert refused.exit_code == 2 and "which the root revoked (revocation list 1" in refused.stderr
    assert kit.run("verify", leaked, *root, "--store", store).exit_code == 2
    # Rolling back to the release signed by the revoked key: status says so.
    assert kit.run("rollback", "--into", store).exit_code == 0
    report = kit.run("status", "--into", store, *root, "--json")
    assert report.exit_code == 1
    checks = {c["check"]: c for c in report.json()["checks"]}
    assert checks["revocation"]["ok"] is False and report.json()["healthy"] is False


def test_a_list_not_signed_by_a_trusted_root_is_refused(kit: ModuleType, tmp_path: Path, keyring: Path) -> None:
    forged = tmp_path / "forged.json"
    assert kit.run("revoke", _key_id(kit, keyring, "release-b"), "--root", keyring / "intruder.key", "--serial", "9",
                   "-o", forged).exit_code == 0
    bundle = _bundle(kit, tmp_path, keyring, "release-a", "1.0.0", "--cert", keyring / "release-a.cert",
                     "--revocations", forged)
    refused = kit.run("verify", bundle, "--key", keyring / "root.pub")
    assert refused.exit_code == 2 and "revocation list is signed by key" in refused.stderr


def test_status_reports_damage_expiry_and_age(kit: ModuleType, tmp_path: Path, keyring: Path) -> None:
    store = tmp_path / "store"
    root = ("--key", keyring / "root.pub")
    bundle = _bundle(kit, tmp_path, keyring, "release-a", "1.0.0", "--cert", keyring / "release-a.cert",
                     "--expires-in", "30")
    assert kit.run("install", bundle, "--into", store, *root).exit_code == 0
    fresh = kit.run("status", "--into", store, *root, "--max-age", "10", "--json")
    assert fresh.exit_code == 0 and fresh.json()["healthy"], fresh.stdout
    # Issued three days ago (the conftest's SOURCE_DATE_EPOCH): older than a one-day limit.
    stale = kit.run("status", "--into", store, *root, "--max-age", "1", "--json")
    assert stale.exit_code == 1 and {c["check"]: c["ok"] for c in stale.json()["checks"]}["freshness"] is False
    # Forty days on, the release (30 days) and the key's certificate (30 days) have both run out.
    import time

    from edgekit.release.signing import load_public_key
    from edgekit.release.status import check_status

    later = check_status(store, load_public_key(keyring / "root.pub"), now=time.time() + 40 * 86_400)
    verdicts = {c["check"]: c for c in later["checks"]}
    assert not later["healthy"] and not verdicts["expiry"]["ok"] and "expired" in verdicts["expiry"]["note"]
    assert not verdicts["signature"]["ok"] and "certificate is valid from" in verdicts["signature"]["note"]
    artifact = next((store / "versions" / "1.0.0" / "raspberry-pi-4").glob("*.onnx"))
    artifact.write_bytes(b"tampered")
    damaged = kit.run("status", "--into", store, *root, "--json")
    assert damaged.exit_code == 1 and damaged.json()["checks"][0]["check"] == "files"
    assert "damaged" in damaged.json()["checks"][0]["note"]
