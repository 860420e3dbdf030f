"""The commit step: a version that fails the device's health check is rolled back, nothing else lost."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

Keys = Any

# A check that looks at the installed model the way an app would: the manifest in EDGEKIT_MODEL_DIR.
CHECK = (f"{sys.executable} -c \"import json, os, sys; m = json.load(open(os.path.join(os.environ['EDGEKIT_MODEL_DIR'], "
         "'manifest.json'))); sys.exit(0 if m['release']['version'] == os.environ['EDGEKIT_MODEL_VERSION'] != '{bad}' "
         "else 4)\"")


def _install(kit: ModuleType, bundle: Path, store: Path, keys: Keys, *extra: str) -> Any:
    return kit.run("install", bundle, "--into", store, "--key", keys.public, "--json", *extra)


def _log(store: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (store / "install.log").read_text().splitlines()]


def test_a_passing_check_commits_the_update(kit: ModuleType, tmp_path: Path, keys: Keys,
                                           bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    done = _install(kit, bundles["1.0.0"], store, keys, "--health-check", CHECK.format(bad="none"))
    assert done.exit_code == 0, done.stderr
    assert done.json()["health_check"]["passed"] is True and done.json()["health_check"]["reason"] == "exit 0"


def test_a_failing_check_rolls_the_update_back_and_blocks_it(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                             bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    assert _install(kit, bundles["1.0.0"], store, keys).exit_code == 0
    failed = _install(kit, bundles["1.1.0"], store, keys, "--health-check", CHECK.format(bad="1.1.0"))
    assert failed.exit_code == 1
    assert "digits-cnn 1.1.0 failed its health check (exit 4); rolled back to 1.0.0" in failed.json()["error"]
    state = json.loads((store / "state.json").read_text())
    assert state["current"]["version"] == "1.0.0" and state["rolled_back"] == ["1.1.0"]
    assert sorted(p.name for p in (store / "versions").iterdir()) == ["1.0.0"]
    assert kit.run("verify", bundles["1.0.0"], "--key", keys.public, "--store", store).exit_code == 0
    event = _log(store)[-1]
    assert event["event"] == "health-check-failed" and event["now"] == "1.0.0"
    assert event["health_check"]["reason"] == "exit 4"
    # The updater polling for "newer than installed" is not handed the failed release again.
    assert _install(kit, bundles["1.1.0"], store, keys).json()["status"] == "blocked"


def test_a_first_install_that_fails_its_check_leaves_no_model(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                              bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    failed = _install(kit, bundles["1.0.0"], store, keys, "--health-check", CHECK.format(bad="1.0.0"))
    assert failed.exit_code == 1 and "removed it" in failed.json()["error"]
    assert not (store / "state.json").exists() and not any((store / "versions").iterdir())
    assert _log(store)[-1]["now"] is None


def test_a_check_that_hangs_fails_at_its_timeout(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                 bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    assert _install(kit, bundles["1.0.0"], store, keys).exit_code == 0
    hang = f"{sys.executable} -c 'import time; time.sleep(30)'"
    failed = _install(kit, bundles["1.1.0"], store, keys, "--health-check", hang, "--health-timeout", "0.5")
    assert failed.exit_code == 1 and "timed out after 0.5 s" in failed.json()["error"]
    assert json.loads((store / "state.json").read_text())["current"]["version"] == "1.0.0"


def test_a_check_that_cannot_start_counts_as_failed(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                    bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    failed = _install(kit, bundles["1.0.0"], store, keys, "--health-check", "/nonexistent/selftest")
    assert failed.exit_code == 1 and "could not start" in failed.json()["error"]
    bad = _install(kit, bundles["1.0.0"], store, keys, "--health-check", "'unbalanced")
    assert bad.exit_code == 2 and "cannot be parsed" in bad.json()["error"]
