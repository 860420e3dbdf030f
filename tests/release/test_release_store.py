"""The device store: install, update, rollback, audit log, rollout, and power cuts at every step."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgekit.release import rollout
from edgekit.release.signing import load_public_key
from edgekit.release.store import Store, current_dir, install_bundle, rollback

Keys = Any


def _install(kit: ModuleType, bundle: Path, store: Path, keys: Keys, *extra: object) -> Any:
    return kit.run("install", bundle, "--into", store, "--key", keys.public, "--device-id", "dev-1", "--json", *extra)


def _state(store: Path) -> dict[str, Any]:
    return json.loads((store / "state.json").read_text())


def _log(store: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (store / "install.log").read_text().splitlines() if line]


def _onnx_bytes(folder: Path) -> bytes:
    return (folder / "raspberry-pi-4" / "digits-cnn.int8.onnx").read_bytes()


def test_install_update_rollback_and_forward(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    first = _install(kit, bundles["1.0.0"], store, keys)
    assert first.exit_code == 0, first.stderr
    assert first.json()["status"] == "installed" and first.json()["previous"] is None
    assert current_dir(store) == store / "versions" / "1.0.0"
    assert _onnx_bytes(current_dir(store)).startswith(b"ONNX1.0.0")

    second = _install(kit, bundles["1.1.0"], store, keys)
    assert second.exit_code == 0 and second.json()["previous"] == "1.0.0"
    assert _state(store)["current"]["version"] == "1.1.0" and _state(store)["previous"]["version"] == "1.0.0"
    assert _onnx_bytes(current_dir(store)).startswith(b"ONNX1.1.0")
    assert (store / "versions" / "1.0.0").is_dir(), "the previous version is kept"

    back = kit.run("rollback", "--into", store, "--json")
    assert back.exit_code == 0, back.stderr
    assert back.json()["version"] == "1.0.0" and back.json()["previous"] == "1.1.0"
    assert _onnx_bytes(current_dir(store)).startswith(b"ONNX1.0.0")

    forward = kit.run("rollback", "--into", store, "--json")
    assert forward.exit_code == 0 and forward.json()["version"] == "1.1.0"
    assert sorted(p.name for p in store.iterdir()) == ["install.log", "state.json", "versions"]


def test_a_rolled_back_version_is_not_reinstalled_by_a_polling_updater(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    _install(kit, bundles["1.1.0"], store, keys)
    assert kit.run("rollback", "--into", store).exit_code == 0
    before = kit.snapshot(store)
    polled = _install(kit, bundles["1.1.0"], store, keys)  # "newer than installed", but rolled back here
    assert polled.exit_code == 0 and polled.json()["status"] == "blocked"
    assert kit.snapshot(store) == before and current_dir(store) == store / "versions" / "1.0.0"
    assert "rolled back" in kit.run("install", bundles["1.1.0"], "--into", store, "--key", keys.public).stdout
    forced = kit.run("install", bundles["1.1.0"], "--into", store, "--key", keys.public, "--force", "--json")
    assert forced.exit_code == 0 and forced.json()["status"] == "installed"
    assert "rolled_back" not in _state(store)  # installing it on purpose lifts the block


def test_rolling_forward_again_lifts_the_block_on_that_version(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    _install(kit, bundles["1.1.0"], store, keys)
    kit.run("rollback", "--into", store)
    assert _state(store)["rolled_back"] == ["1.1.0"]
    kit.run("rollback", "--into", store)  # back to 1.1.0: now 1.0.0 is the one left behind
    assert _state(store)["rolled_back"] == ["1.0.0"]


def test_audit_log_answers_which_version_ran(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    _install(kit, bundles["1.1.0"], store, keys)
    kit.run("rollback", "--into", store, "--device-id", "dev-1")
    log = _log(store)
    assert [(e["event"], e["version"], e["previous"]) for e in log] == [
        ("install", "1.0.0", None),
        ("install", "1.1.0", "1.0.0"),
        ("rollback", "1.0.0", "1.1.0"),
    ]
    import hashlib

    assert log[1]["sha256"] == hashlib.sha256(bundles["1.1.0"].read_bytes()).hexdigest()
    assert (
        log[1]["manifest_sha256"] == hashlib.sha256((store / "versions/1.1.0/manifest.json").read_bytes()).hexdigest()
    )
    assert all(e["device_id"] == "dev-1" and e["model"] == "digits-cnn" and e["time"].endswith("Z") for e in log)


def test_reinstalling_the_same_bundle_changes_nothing(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    before = kit.snapshot(store)
    again = _install(kit, bundles["1.0.0"], store, keys)
    assert again.exit_code == 0 and again.json()["status"] == "unchanged"
    assert kit.snapshot(store) == before


def test_same_version_with_other_contents_is_refused(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.1.0"], store, keys)
    build = kit.make_build(tmp_path / "rebuild", seed="different")
    made = kit.run(
        "bundle",
        build,
        "--key",
        keys.private,
        "--version",
        "1.1.0",
        "-o",
        tmp_path / "out",
        "--target",
        "raspberry-pi-4",
        "--json",
    )
    before = kit.snapshot(store)
    refused = _install(kit, Path(made.json()["bundles"][0]["path"]), store, keys)
    assert refused.exit_code == 2 and "already installed with different contents" in refused.stderr
    assert kit.snapshot(store) == before


def test_downgrade_only_with_allow_downgrade(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.2.0"], store, keys)
    assert _install(kit, bundles["1.0.0"], store, keys).exit_code == 2
    allowed = _install(kit, bundles["1.0.0"], store, keys, "--allow-downgrade")
    assert allowed.exit_code == 0 and allowed.json()["previous"] == "1.2.0"
    assert _log(store)[-1]["downgrade"] is True
    assert _state(store)["current"]["version"] == "1.0.0"


def test_store_keeps_current_and_previous_only(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        assert _install(kit, bundles[version], store, keys).exit_code == 0
    assert sorted(p.name for p in (store / "versions").iterdir()) == ["1.1.0", "1.2.0"]


def test_rollback_needs_a_previous_version(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    empty = kit.run("rollback", "--into", tmp_path / "nothing")
    assert empty.exit_code == 2 and "no model is installed" in empty.stderr
    assert not (tmp_path / "nothing").exists()
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    alone = kit.run("rollback", "--into", store)
    assert alone.exit_code == 2 and "no previous version" in alone.stderr


def test_rollback_refuses_a_damaged_previous_version(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    _install(kit, bundles["1.1.0"], store, keys)
    victim = store / "versions/1.0.0/raspberry-pi-4/digits-cnn.int8.onnx"
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))
    before = kit.snapshot(store)
    refused = kit.run("rollback", "--into", store)
    assert refused.exit_code == 2 and "damaged" in refused.stderr
    assert kit.snapshot(store) == before


def test_a_store_holds_one_model(kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    build = kit.make_build(tmp_path / "other")
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["model"]["name"] = "speech-kws"
    from edgekit.release.manifest import write_manifest

    write_manifest(build, manifest)
    made = kit.run(
        "bundle",
        build,
        "--key",
        keys.private,
        "--version",
        "2.0.0",
        "-o",
        tmp_path / "out",
        "--target",
        "raspberry-pi-4",
        "--json",
    )
    refused = _install(kit, Path(made.json()["bundles"][0]["path"]), store, keys)
    assert refused.exit_code == 2 and "holds model digits-cnn" in refused.stderr


def test_busy_store_is_refused(kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    fd = os.open(store, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        busy = _install(kit, bundles["1.1.0"], store, keys)
    finally:
        os.close(fd)
    assert busy.exit_code == 2 and "busy" in busy.stderr
    assert _state(store)["current"]["version"] == "1.0.0"


def test_a_busy_fresh_store_is_not_removed_under_its_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reproduced race: two updaters find no store; the loser of the lock removed the folder the winner held."""
    from edgekit.errors import InputError

    store = tmp_path / "store"
    real_exists = Path.exists
    with Store.locked(store):  # the winner: created the store and holds it
        # The loser looked before the winner created the folder.
        monkeypatch.setattr(Path, "exists", lambda self: False if self == store else real_exists(self))
        with pytest.raises(InputError, match="busy"):
            with Store.locked(store):
                pytest.fail("two holders of one store")
        monkeypatch.undo()
        assert store.is_dir()  # still there for the holder
    assert not store.exists()  # the holder installed nothing, so it removed its own empty store


def test_a_lock_taken_on_a_folder_removed_meanwhile_is_let_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other interleaving: opened before the holder removed it, locked after; the path is a new folder now."""
    from edgekit.errors import InputError

    store = tmp_path / "store"
    store.mkdir()
    real = fcntl.flock

    def removed_and_recreated_before_the_lock(fd: int, operation: int) -> None:
        store.rmdir()
        store.mkdir()  # another updater's fresh store at the same path
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", removed_and_recreated_before_the_lock)
    with pytest.raises(InputError, match="busy"):
        with Store.locked(store):
            pytest.fail("two holders of one store")


@pytest.mark.parametrize(("damage", "said"), [
    (lambda state: state["current"].pop("manifest_sha256"), "the current record lacks manifest_sha256"),
    (lambda state: state.pop("model"), "no model name"),
    (lambda state: state.update(current={}), "the current record lacks version"),
    (lambda state: state.update(previous=5), "no previous version record"),
    (lambda state: state["current"].update(version="latest"), "'latest' is not a version"),
    (lambda state: state.update(rolled_back="1.0.0"), "rolled_back is not a list"),
])
def test_a_damaged_state_file_is_a_clean_refusal(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                 bundles: dict[str, Path], damage: Any, said: str) -> None:
    """A state.json missing keys crashed install and rollback with exit 3; it is named and refused with exit 2."""
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    _install(kit, bundles["1.1.0"], store, keys)
    state = _state(store)
    damage(state)
    (store / "state.json").write_text(json.dumps(state))
    before = kit.snapshot(store)
    for outcome in (_install(kit, bundles["1.2.0"], store, keys), kit.run("rollback", "--into", store)):
        assert outcome.exit_code == 2, outcome.stderr
        assert "is not an edgekit store state" in outcome.stderr and said in outcome.stderr
    assert kit.snapshot(store) == before


def test_min_app_version_is_enforced(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build")
    made = kit.run("bundle", build, "--key", keys.private, "--version", "1.0.0", "-o", tmp_path / "out",
                   "--target", "raspberry-pi-4", "--min-app-version", "2.3", "--json")  # fmt: skip
    bundle = Path(made.json()["bundles"][0]["path"])
    store = tmp_path / "store"
    old_app = _install(kit, bundle, store, keys, "--app-version", "2.2.9")
    assert old_app.exit_code == 2 and "needs app version 2.3" in old_app.stderr
    assert not store.exists()
    unsaid = _install(kit, bundle, store, keys)  # fails closed: an app of unknown version may be too old
    assert unsaid.exit_code == 2 and "does not say which app version" in unsaid.stderr
    assert not store.exists()
    assert _install(kit, bundle, store, keys, "--app-version", "2.3").exit_code == 0


# -- rollout ---------------------------------------------------------------------------------


def test_bucketing_is_deterministic_uniform_and_monotonic() -> None:
    ids = [f"device-{i:05d}" for i in range(10_000)]
    at_30 = [d for d in ids if rollout.selected("digits-cnn", "1.1.0", d, 30)]
    assert 0.28 < len(at_30) / len(ids) < 0.32
    at_60 = {d for d in ids if rollout.selected("digits-cnn", "1.1.0", d, 60)}
    assert set(at_30) <= at_60, "raising the percentage only adds devices"
    assert at_30 == [d for d in ids if rollout.bucket("digits-cnn", "1.1.0", d) < 30]
    next_release = [d for d in ids if rollout.selected("digits-cnn", "1.2.0", d, 30)]
    assert set(next_release) != set(at_30), "each release picks its own first group"
    assert not any(rollout.selected("digits-cnn", "1.1.0", d, 0) for d in ids[:500])
    assert all(rollout.selected("digits-cnn", "1.1.0", d, 100) for d in ids[:500])


def test_install_honours_the_rollout(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build")
    made = kit.run("bundle", build, "--key", keys.private, "--version", "1.0.0", "-o", tmp_path / "out",
                   "--target", "raspberry-pi-4", "--rollout", "25", "--json")  # fmt: skip
    bundle = Path(made.json()["bundles"][0]["path"])
    ids = [f"pi-{i}" for i in range(40)]
    inside = next(d for d in ids if rollout.bucket("digits-cnn", "1.0.0", d) < 25)
    outside = next(d for d in ids if rollout.bucket("digits-cnn", "1.0.0", d) >= 25)

    store_out = tmp_path / "out-store"
    deferred = kit.run("install", bundle, "--into", store_out, "--key", keys.public, "--device-id", outside, "--json")
    assert deferred.exit_code == 0 and deferred.json()["status"] == "deferred"
    assert not store_out.exists(), "a deferred install writes nothing"
    forced = kit.run(
        "install", bundle, "--into", store_out, "--key", keys.public, "--device-id", outside, "--force", "--json"
    )
    assert forced.json()["status"] == "installed" and _log(store_out)[-1]["forced"] is True

    store_in = tmp_path / "in-store"
    via_env = kit.run(
        "install", bundle, "--into", store_in, "--key", keys.public, "--json", env={"EDGEKIT_DEVICE_ID": inside}
    )
    assert via_env.json()["status"] == "installed" and via_env.json()["device_id"] == inside
    assert _log(store_in)[-1]["device_id"] == inside


def test_partial_rollout_needs_a_device_id(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    from edgekit.errors import InputError
    from edgekit.release.timestamps import release_epoch  # noqa: F401  (import check only)

    build = kit.make_build(tmp_path / "build")
    made = kit.run("bundle", build, "--key", keys.private, "--version", "1.0.0", "-o", tmp_path / "out",
                   "--target", "raspberry-pi-4", "--rollout", "50", "--json")  # fmt: skip
    bundle = Path(made.json()["bundles"][0]["path"])
    with pytest.raises(InputError, match="has no id"):
        install_bundle(bundle, tmp_path / "store", load_public_key(keys.public), device_id=None,
                       target="raspberry-pi-4")
    assert not (tmp_path / "store").exists()
    assert rollout.device_id(None, machine_id_file=tmp_path / "missing") is None
    (tmp_path / "machine-id").write_text("abc123\n")
    assert rollout.device_id(None, machine_id_file=tmp_path / "machine-id") == "abc123"


# -- power cuts ------------------------------------------------------------------------------


def _cut_power_at(step: int, action: Any) -> int:
    """Run ``action`` in a child process that dies (os._exit: no cleanup, like a power cut)
    just before its ``step``-th rename or fsync. Returns 17 if it died, 0 if it finished."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            calls = 0
            real_replace, real_fsync = os.replace, os.fsync

            def cut(real: Any) -> Any:
                def wrapper(*args: Any, **kwargs: Any) -> Any:
                    nonlocal calls
                    calls += 1
                    if calls == step:
                        os._exit(17)
                    return real(*args, **kwargs)

                return wrapper

            os.replace, os.fsync = cut(real_replace), cut(real_fsync)
            action()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _assert_whole(store: Path, allowed: set[str]) -> str:
    state = _state(store)
    current = state["current"]["version"]
    assert current in allowed
    Store(store).check_version_intact(current)
    if state["previous"]:
        Store(store).check_version_intact(state["previous"]["version"])
    return current


def test_power_cut_during_install_leaves_old_or_new(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    public = load_public_key(keys.public)
    seen: set[str] = set()
    step = 1
    while True:
        store = tmp_path / f"store-{step}"
        assert _install(kit, bundles["1.0.0"], store, keys).exit_code == 0
        code = _cut_power_at(step, lambda store=store: install_bundle(bundles["1.1.0"], store, public, device_id="d",
                                                                      target="raspberry-pi-4"))
        assert code in (0, 17)
        seen.add(_assert_whole(store, {"1.0.0", "1.1.0"}))
        # The next run cleans up and finishes the job.
        install_bundle(bundles["1.1.0"], store, public, device_id="d", target="raspberry-pi-4")
        assert _state(store)["current"]["version"] == "1.1.0"
        assert not [p for p in store.iterdir() if p.name.startswith(".")], "leftovers were swept"
        if code == 0:
            break
        step += 1
    assert seen == {"1.0.0", "1.1.0"} and step > 5, f"cut at {step} points"


def test_power_cut_during_rollback_leaves_old_or_new(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    step = 1
    while True:
        store = tmp_path / f"store-{step}"
        _install(kit, bundles["1.0.0"], store, keys)
        _install(kit, bundles["1.1.0"], store, keys)
        code = _cut_power_at(step, lambda store=store: rollback(store))
        assert code in (0, 17)
        now = _assert_whole(store, {"1.0.0", "1.1.0"})
        assert now == ("1.0.0" if code == 0 else now)
        if code == 0:
            break
        step += 1
    assert step > 1


def test_downgrading_to_the_kept_previous_version_reuses_it(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    _install(kit, bundles["1.1.0"], store, keys)
    kept = store / "versions" / "1.0.0"
    inode = kept.stat().st_ino
    back = _install(kit, bundles["1.0.0"], store, keys, "--allow-downgrade")
    assert back.exit_code == 0 and back.json()["previous"] == "1.1.0"
    assert kept.stat().st_ino == inode, "the verified folder already in place was kept"
    assert sorted(p.name for p in (store / "versions").iterdir()) == ["1.0.0", "1.1.0"]


def test_an_orphaned_version_folder_is_replaced_not_trusted(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    # An interrupted install can leave versions/1.1.0 that no state names; it must not be reused as is.
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    orphan = store / "versions" / "1.1.0"
    (orphan / "raspberry-pi-4").mkdir(parents=True)
    (orphan / "raspberry-pi-4" / "digits-cnn.int8.onnx").write_bytes(b"planted")
    assert _install(kit, bundles["1.1.0"], store, keys).exit_code == 0
    assert _onnx_bytes(current_dir(store)).startswith(b"ONNX1.1.0")
    Store(store).check_version_intact("1.1.0")


def test_an_app_running_as_another_user_reads_the_model_through_its_group(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                                          bundles: dict[str, Path]) -> None:
    """Installed folders were 0700 and state.json 0600: an app under another user could not read the model."""
    import grp
    import stat

    group = grp.getgrgid(os.getgid()).gr_name  # a group this user is in, as the app's group would be
    store = tmp_path / "store"
    unknown = _install(kit, bundles["1.0.0"], store, keys, "--group", "no-such-group-here")
    assert unknown.exit_code == 2 and "there is no group 'no-such-group-here'" in unknown.stderr
    assert not (store / "state.json").exists()

    for version, extra in (("1.0.0", ("--group", group)), ("1.1.0", ())):  # remembered after the first
        assert _install(kit, bundles[version], store, keys, *extra).exit_code == 0
        installed = store / "versions" / version
        for path in (store, store / "versions", installed, *installed.rglob("*"), store / "state.json"):
            mode = stat.S_IMODE(path.stat().st_mode)
            expected = 0o750 if path.is_dir() else 0o640
            assert path.stat().st_gid == os.getgid() and mode == expected, (path, oct(mode))
    assert _state(store)["group"] == group


def _release_naming_rollback_to(kit: ModuleType, tmp_path: Path, keys: Keys, version: str, rollback_to: str) -> Path:
    build = kit.make_build(tmp_path / f"build-rb-{version}", seed=f"rb-{version}")
    made = kit.run("bundle", build, "--key", keys.private, "--version", version, "-o", tmp_path / "rb",
                   "-t", "raspberry-pi-4", "--rollback-to", rollback_to, "--json")
    assert made.exit_code == 0, made.stderr
    return Path(made.json()["bundles"][0]["path"])


def test_rollback_goes_where_the_release_says_when_the_store_kept_it(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                                      bundles: dict[str, Path]) -> None:
    """1.1.0 turned out bad too, so 1.2.0 names 1.0.0 as its way back: the store keeps 1.0.0 and goes there."""
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    _install(kit, bundles["1.1.0"], store, keys)
    _install(kit, _release_naming_rollback_to(kit, tmp_path, keys, "1.2.0", "1.0.0"), store, keys)
    assert sorted(p.name for p in (store / "versions").iterdir()) == ["1.0.0", "1.1.0", "1.2.0"]
    assert list(_state(store)["kept"]) == ["1.0.0"]

    back = kit.run("rollback", "--into", store, "--json")
    assert back.exit_code == 0 and back.json()["version"] == "1.0.0" and back.json()["rollback_to"] == "1.0.0"
    state = _state(store)
    assert state["current"]["version"] == "1.0.0" and state["previous"]["version"] == "1.2.0"
    assert "kept" not in state and sorted(p.name for p in (store / "versions").iterdir()) == ["1.0.0", "1.2.0"]


def test_a_failed_health_check_also_returns_to_rollback_to(kit: ModuleType, tmp_path: Path, keys: Keys,
                                                           bundles: dict[str, Path]) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.0.0"], store, keys)
    _install(kit, bundles["1.1.0"], store, keys)
    failing = f"{sys.executable} -c 'raise SystemExit(3)'"
    bad = _release_naming_rollback_to(kit, tmp_path, keys, "1.2.0", "1.0.0")
    outcome = _install(kit, bad, store, keys, "--health-check", failing)
    assert outcome.exit_code == 1 and "rolled back to 1.0.0" in outcome.stderr
    state = _state(store)
    assert state["current"]["version"] == "1.0.0" and state["previous"]["version"] == "1.1.0"


def test_a_rollback_to_the_store_never_had_falls_back_to_the_previous_version(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    _install(kit, bundles["1.1.0"], store, keys)
    _install(kit, _release_naming_rollback_to(kit, tmp_path, keys, "1.2.0", "1.0.0"), store, keys)
    back = kit.run("rollback", "--into", store, "--json")
    assert back.json()["version"] == "1.1.0" and back.json()["rollback_to"] == "1.0.0"
