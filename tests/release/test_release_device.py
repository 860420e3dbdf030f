"""A store knows its device: a validly signed bundle for another target or channel never installs."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

Keys = Any


def _bundle(kit: ModuleType, tmp_path: Path, keys: Keys, name: str, target: str, *extra: str,
            version: str = "1.0.0") -> Path:
    build = kit.make_build(tmp_path / f"build-{name}", seed=name, version=version)
    made = kit.run("bundle", build, "--key", keys.private, "--version", version, "-o", tmp_path / name, "-t", target,
                   "--json", *extra)
    assert made.exit_code == 0, made.stderr
    return Path(made.json()["bundles"][0]["path"])


def _install(kit: ModuleType, bundle: Path, store: Path, keys: Keys, *extra: str, env: dict | None = None) -> Any:
    return kit.run("install", bundle, "--into", store, "--key", keys.public, "--json", *extra, env=env)


def test_a_bundle_for_another_target_is_refused_and_the_right_one_still_installs(
    kit: ModuleType, tmp_path: Path, keys: Keys
) -> None:
    """The reproduced fault: an iPhone bundle pinned a fresh Pi store, and the Pi's own release was then refused."""
    phone = _bundle(kit, tmp_path, keys, "phone", "iphone-ios17")
    pi = _bundle(kit, tmp_path, keys, "pi", "raspberry-pi-4")
    store = tmp_path / "store"

    refused = _install(kit, phone, store, keys, "--target", "raspberry-pi-4")
    assert refused.exit_code == 2
    assert "the bundle is for target iphone-ios17, channel stable; this device is target raspberry-pi-4" \
        in refused.json()["error"]
    assert not (store / "state.json").exists()  # nothing recorded, nothing pinned

    assert _install(kit, pi, store, keys, "--target", "raspberry-pi-4").exit_code == 0
    state = json.loads((store / "state.json").read_text())
    assert state["device"] == {"target": "raspberry-pi-4", "channel": "stable"}
    # Which key signed what is on record, for the day a key is rotated or revoked.
    signer = kit.run("verify", pi, "--key", keys.public, "--json").json()["key_id"]
    log = [json.loads(line) for line in (store / "install.log").read_text().splitlines()]
    assert log[-1]["key_id"] == state["current"]["key_id"] == signer
    # Later installs need no flag: the store remembers; a wrong bundle is still refused.
    assert _install(kit, phone, store, keys, env={"EDGEKIT_TARGET": None}).exit_code == 2


def test_a_beta_bundle_is_refused_on_a_stable_device_and_accepted_on_a_beta_one(
    kit: ModuleType, tmp_path: Path, keys: Keys
) -> None:
    beta = _bundle(kit, tmp_path, keys, "beta", "raspberry-pi-4", "--channel", "beta")
    refused = _install(kit, beta, tmp_path / "stable-store", keys)
    assert refused.exit_code == 2 and "channel beta; this device is target raspberry-pi-4, channel stable" \
        in refused.json()["error"]
    accepted = _install(kit, beta, tmp_path / "beta-store", keys, "--channel", "beta")
    assert accepted.exit_code == 0, accepted.stderr


def test_the_first_install_must_name_the_device(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    pi = _bundle(kit, tmp_path, keys, "pi", "raspberry-pi-4")
    refused = _install(kit, pi, tmp_path / "store", keys, env={"EDGEKIT_TARGET": None})
    assert refused.exit_code == 2
    assert "has no device identity yet" in refused.json()["error"] and "--target" in refused.json()["error"]
    assert not (tmp_path / "store" / "state.json").exists()


def test_an_install_cannot_change_the_stores_identity(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    store = tmp_path / "store"
    assert _install(kit, _bundle(kit, tmp_path, keys, "pi", "raspberry-pi-4"), store, keys).exit_code == 0
    newer = _bundle(kit, tmp_path, keys, "phone", "iphone-ios17", version="1.1.0")
    refused = _install(kit, newer, store, keys, "--target", "iphone-ios17")
    assert refused.exit_code == 2 and "belongs to target raspberry-pi-4, channel stable" in refused.json()["error"]


@pytest.mark.parametrize("flags", [(), ("--target", "raspberry-pi-4")])
def test_a_store_from_before_identities_takes_its_current_release(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                                  flags: tuple[str, ...]) -> None:
    store = tmp_path / "store"
    assert _install(kit, _bundle(kit, tmp_path, keys, "pi", "raspberry-pi-4"), store, keys).exit_code == 0
    state = json.loads((store / "state.json").read_text())
    del state["device"]  # as an older edgekit wrote it
    (store / "state.json").write_text(json.dumps(state))
    phone = _bundle(kit, tmp_path, keys, "phone", "iphone-ios17", version="1.1.0")
    assert _install(kit, phone, store, keys, *flags, env={"EDGEKIT_TARGET": None}).exit_code == 2
    pi = _bundle(kit, tmp_path, keys, "pi2", "raspberry-pi-4", version="1.1.0")
    assert _install(kit, pi, store, keys, *flags, env={"EDGEKIT_TARGET": None}).exit_code == 0
    assert json.loads((store / "state.json").read_text())["device"]["target"] == "raspberry-pi-4"
