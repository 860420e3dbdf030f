"""The entry format (``edgekit.cache.entry``): what a put accepts, and damage found when an entry is read."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from edgekit.cache import BuildCache

KIND = "export"


@pytest.mark.parametrize(
    "files, error",
    [
        ({"../escape": "model.bin"}, ValueError),
        ({"a/../b": "model.bin"}, ValueError),
        ({"/abs": "model.bin"}, ValueError),
        ({"": "model.bin"}, ValueError),
        ({"a/": "model.bin"}, ValueError),
        ({"./a": "model.bin"}, ValueError),
        ({"a": "model.bin", "a/b": "model.bin"}, ValueError),
        ({"ok": "missing.bin"}, FileNotFoundError),
        ({"ok": "linked"}, ValueError),
    ],
)
def test_put_refuses_bad_names_and_sources_and_leaves_nothing(
    cache: BuildCache, kit: ModuleType, tmp_path: Path, files: dict[str, str], error: type[Exception]
) -> None:
    (tmp_path / "model.bin").write_bytes(b"m")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "link").symlink_to(tmp_path / "model.bin")
    with pytest.raises(error):
        cache.put(KIND, "k1", {name: tmp_path / source for name, source in files.items()}, {})
    assert kit.tree(cache.root / "entries") == {} and kit.tree(cache.root / "staging") == {}


@pytest.mark.parametrize(
    "kind, key, record, error",
    [
        ("../x", "k", {}, ValueError),
        (KIND, "a/b", {}, ValueError),
        (KIND, "", {}, ValueError),
        (KIND, "k", {"v": {1, 2}}, TypeError),
        (KIND, "k", {"v": float("nan")}, ValueError),
        (KIND, "k", ["not", "a", "mapping"], TypeError),
    ],
)
def test_put_refuses_bad_ids_and_records(cache: BuildCache, kind: str, key: str, record: object,
                                         error: type[Exception]) -> None:
    with pytest.raises(error):
        cache.put(kind, key, {}, record)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- damage


def _garble_record(entry: Path) -> None:
    (entry / "entry.json").write_text("{not json")


def _escape_record(entry: Path) -> None:
    meta = json.loads((entry / "entry.json").read_text())
    meta["items"][0]["path"] = "../../outside"
    (entry / "entry.json").write_text(json.dumps(meta))


def _truncate_file(entry: Path) -> None:
    path = entry / "files" / "model.bin"
    path.write_bytes(path.read_bytes()[:-1])


def _flip_byte(entry: Path) -> None:
    path = entry / "files" / "model.bin"
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "record missing": lambda entry: (entry / "entry.json").unlink(),
    "record garbled": _garble_record,
    "record escapes": _escape_record,
    "file missing": lambda entry: (entry / "files" / "nested/model.mlpackage/Data/weights/w2.bin").unlink(),
    "folder missing": lambda entry: (entry / "files" / "nested/model.mlpackage/Data/empty").rmdir(),
    "file truncated": _truncate_file,
    "file changed": _flip_byte,
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_entry_is_a_miss_and_is_removed(cache: BuildCache, kit: ModuleType, tmp_path: Path,
                                                  damage) -> None:
    sources = kit.sources(tmp_path / "src")
    cache.put(KIND, "k1", sources, {"v": 1})
    damage(kit.entry(cache, "k1"))

    assert cache.get(KIND, "k1", tmp_path / "out") is None
    assert not kit.entry(cache, "k1").exists()
    assert kit.tree(tmp_path / "out") == {} and not (tmp_path / "outside").exists()
    cache.put(KIND, "k1", sources, {"v": 1})  # and it can be stored again
    assert cache.get(KIND, "k1", tmp_path / "out") == {"v": 1}
