"""Every byte an install commits to is on disk before state.json points at it: a missing fsync fails here.

The power-cut tests kill the process, which keeps the page cache, so they
prove the order of renames but cannot see a missing fsync. This test records
every fsync and rename the store makes (the journal) and checks, at the
rename that commits ``state.json``, what a power cut right after it could
lose: each installed file must have been fsynced in its final state, each
folder of the staged version before it was renamed into ``versions/``, that
rename by an fsync of ``versions/``, the new state file before its rename,
and that rename by an fsync of the store folder afterwards. It is run on a
real install, and on installs with one fsync removed, which it must catch.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import pytest

from edgekit.release import archive
from edgekit.release import store as store_module
from edgekit.release.signing import load_public_key
from edgekit.release.store import STATE_NAME, install_bundle

Keys = Any


class Journal:
    """The fsyncs (path, size and mtime at the time) and renames of one install, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str, Any]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            real_fsync(fd)
            info = os.fstat(fd)
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), (info.st_size, info.st_mtime_ns)))

        def replace(src: Any, dst: Any) -> None:
            source, target = os.path.abspath(src), os.path.abspath(dst)
            real_replace(src, dst)
            self.events.append(("replace", source, target))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def _index(self, kind: str, match: Any, start: int = 0, stop: int | None = None) -> int | None:
        for i, event in enumerate(self.events[start:stop], start):
            if event[0] == kind and match(event):
                return i
        return None

    def lost_at_commit(self, store: Path, version: str) -> list[str]:
        """What a power cut right after the state.json rename could lose (empty: nothing)."""
        state_file, versions = str(store.resolve() / STATE_NAME), str(store.resolve() / "versions")
        installed = store.resolve() / "versions" / version
        commit = self._index("replace", lambda e: e[2] == state_file)
        assert commit is not None, "the install never replaced state.json"
        staged_index = self._index("replace", lambda e: e[2] == str(installed), stop=commit)
        assert staged_index is not None, "the version folder was not renamed into place"
        staging = Path(self.events[staged_index][1])
        problems = []
        for path in sorted(installed.rglob("*")):
            was = str(staging / path.relative_to(installed))
            if path.is_dir():
                if self._index("fsync", lambda e, was=was: e[1] == was, stop=staged_index) is None:
                    problems.append(f"folder {path.relative_to(installed)} never fsynced before the rename")
                continue
            now = path.stat()
            synced = self._index("fsync", lambda e, was=was, now=now: e[1] == was and
                                 e[2] == (now.st_size, now.st_mtime_ns), stop=staged_index)
            if synced is None:
                problems.append(f"file {path.relative_to(installed)} not fsynced in its final state")
        if self._index("fsync", lambda e: e[1] == str(staging), stop=staged_index) is None:
            problems.append("the staged version folder never fsynced")
        if self._index("fsync", lambda e: e[1] == versions, start=staged_index, stop=commit) is None:
            problems.append("versions/ not fsynced after the version was renamed into it")
        state_tmp = self.events[commit][1]
        if self._index("fsync", lambda e: e[1] == state_tmp, stop=commit) is None:
            problems.append("the new state file not fsynced before its rename")
        if self._index("fsync", lambda e: e[1] == str(store.resolve()), start=commit) is None:
            problems.append("the store folder not fsynced after state.json was replaced")
        return problems


def _install(bundle: Path, store: Path, keys: Keys) -> None:
    install_bundle(bundle, store, load_public_key(keys.public), device_id="d", target="raspberry-pi-4")


def test_an_install_syncs_everything_before_it_commits(tmp_path: Path, keys: Keys, bundles: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    _install(bundles["1.0.0"], store, keys)
    journal = Journal(monkeypatch)
    _install(bundles["1.1.0"], store, keys)
    assert journal.lost_at_commit(store, "1.1.0") == []


def _without_file_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The archive writes each member's bytes but no longer fsyncs them."""
    proxy = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    proxy.fsync = lambda fd: None
    monkeypatch.setattr(archive, "os", proxy)


def _without_tree_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_fsync_tree", lambda folder: None)


def _without_folder_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_fsync_dir", lambda path: None)


@pytest.mark.parametrize(("remove", "caught"), [
    (_without_file_fsync, "not fsynced in its final state"),
    (_without_tree_fsync, "never fsynced before the rename"),
    (_without_folder_fsync, "not fsynced after"),
])
def test_a_missing_fsync_is_caught(tmp_path: Path, keys: Keys, bundles: dict[str, Path],
                                   monkeypatch: pytest.MonkeyPatch, remove: Any, caught: str) -> None:
    store = tmp_path / "store"
    _install(bundles["1.0.0"], store, keys)
    remove(monkeypatch)
    journal = Journal(monkeypatch)
    _install(bundles["1.1.0"], store, keys)
    lost = journal.lost_at_commit(store, "1.1.0")
    assert any(caught in problem for problem in lost), lost
