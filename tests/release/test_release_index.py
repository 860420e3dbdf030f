"""A short-lived signed index of the latest releases: a device served an old release notices (freeze, replay)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

Keys = Any


def _index(kit: ModuleType, tmp_path: Path, keys: Keys, *bundles: Path, hours: str = "200", key: Any = None) -> Path:
    # The conftest's SOURCE_DATE_EPOCH is three days ago, so an index must last more than 72 h to be fresh now.
    out = tmp_path / f"index-{len(list(tmp_path.glob('index-*')))}.json"
    made = kit.run("index", *bundles, "--key", key or keys.private, "--expires-in", hours, "-o", out, "--json")
    assert made.exit_code == 0, made.stderr
    return out


def test_an_old_release_is_refused_when_the_index_lists_a_newer_one(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                                     bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    index = _index(kit, tmp_path, keys, bundles["1.0.0"], bundles["1.1.0"])
    listed = json.loads(index.read_text())["releases"]
    assert [(r["model"], r["version"]) for r in listed] == [("digits-cnn", "1.1.0")]  # the newest per device class
    # The attacker serves the older, still valid 1.0.0 to a fresh device.
    replayed = kit.run("install", bundles["1.0.0"], "--into", store, "--key", keys.public, "--index", index)
    assert replayed.exit_code == 2 and "1.0.0 is older than 1.1.0, the latest release" in replayed.stderr
    assert not (store / "state.json").exists()
    current = kit.run("install", bundles["1.1.0"], "--into", store, "--key", keys.public, "--index", index)
    assert current.exit_code == 0, current.stderr
    assert kit.run("status", "--into", store, "--key", keys.public, "--index", index).exit_code == 0


def test_status_fails_behind_the_index_or_without_a_fresh_one(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                               bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    assert kit.run("install", bundles["1.0.0"], "--into", store, "--key", keys.public).exit_code == 0
    newer = _index(kit, tmp_path, keys, bundles["1.2.0"])
    frozen = kit.run("status", "--into", store, "--key", keys.public, "--index", newer, "--json")
    assert frozen.exit_code == 1
    check = {c["check"]: c for c in frozen.json()["checks"]}["index"]
    assert not check["ok"] and "older than 1.2.0" in check["note"]

    stale = _index(kit, tmp_path, keys, bundles["1.0.0"], hours="24")  # issued three days ago, one day long
    old = kit.run("status", "--into", store, "--key", keys.public, "--index", stale, "--json")
    assert old.exit_code == 1 and "not now" in {c["check"]: c for c in old.json()["checks"]}["index"]["note"]
    refused = kit.run("install", bundles["1.1.0"], "--into", store, "--key", keys.public, "--index", stale)
    assert refused.exit_code == 2 and "release index is valid from" in refused.stderr


def test_an_index_from_an_untrusted_key_or_edited_is_refused(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                             bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    foreign = _index(kit, tmp_path, keys, bundles["1.0.0"], key=keys.other_private)
    refused = kit.run("install", bundles["1.0.0"], "--into", store, "--key", keys.public, "--index", foreign)
    assert refused.exit_code == 2 and "not by the trusted key" in refused.stderr

    index = _index(kit, tmp_path, keys, bundles["1.2.0"])
    edited = json.loads(index.read_text())
    edited["releases"][0]["version"] = "1.0.0"  # make the old release look current
    index.write_text(json.dumps(edited))
    refused = kit.run("install", bundles["1.0.0"], "--into", store, "--key", keys.public, "--index", index)
    assert refused.exit_code == 2 and "changed after signing" in refused.stderr
