"""The content-addressed build cache: real files, real processes, no mocks."""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from edgekit.cache import BuildCache, NullCache, cache_key, path_digest
from edgekit.errors import OutputError

KIND = "export"


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) mapped to its bytes, or None for a folder."""
    if not folder.exists():
        return {}
    return {
        path.relative_to(folder).as_posix(): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def _sources(base: Path, seed: int = 0, file_bytes: int = 4096, package_files: int = 3) -> dict[str, Path]:
    """A model file and an ``.mlpackage``-like folder (nested, with an empty subfolder)."""
    rng = np.random.default_rng(seed)
    base.mkdir(parents=True, exist_ok=True)
    model = base / "model.bin"
    model.write_bytes(rng.bytes(file_bytes))
    package = base / "model.mlpackage"
    (package / "Data" / "weights").mkdir(parents=True)
    (package / "Data" / "empty").mkdir()
    (package / "Manifest.json").write_text(json.dumps({"seed": seed}))
    for index in range(package_files):
        (package / "Data" / "weights" / f"w{index}.bin").write_bytes(rng.bytes(file_bytes))
    return {"model.bin": model, "nested/model.mlpackage": package}


def _entry(cache: BuildCache, key: str, kind: str = KIND) -> Path:
    return cache.root / "entries" / kind / key


def _expected(sources: dict[str, Path]) -> dict[str, bytes | None]:
    expected: dict[str, bytes | None] = {}
    for name, source in sources.items():
        parts = PurePosixPath(name).parts
        for end in range(1, len(parts)):
            expected["/".join(parts[:end])] = None
        expected[name] = None if source.is_dir() else source.read_bytes()
        if source.is_dir():
            expected.update({f"{name}/{rel}": data for rel, data in _tree(source).items()})
    return expected


@pytest.fixture
def cache(tmp_path: Path) -> BuildCache:
    return BuildCache(tmp_path / "cache")


# --------------------------------------------------------------------------- round trip


def test_a_put_entry_comes_back_with_its_files_folders_and_record(cache: BuildCache, tmp_path: Path) -> None:
    sources = _sources(tmp_path / "src")
    key = cache_key("model", 1)
    assert cache.get(KIND, key, tmp_path / "miss") is None
    assert not (tmp_path / "miss").exists()

    cache.put(KIND, key, sources, {"sha256": "abc", "metrics": {"accuracy": 0.9}})
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.bin").write_bytes(b"stale")
    (out / "unrelated.txt").write_bytes(b"keep")

    assert cache.get(KIND, key, out) == {"sha256": "abc", "metrics": {"accuracy": 0.9}}
    assert _tree(out) == {**_expected(sources), "unrelated.txt": b"keep"}
    assert cache.contains(KIND, key) and not cache.contains("measure", key)
    assert cache.get("measure", key, tmp_path / "other") is None  # kinds are separate namespaces


def test_a_record_only_entry_round_trips(cache: BuildCache, tmp_path: Path) -> None:
    cache.put("measure", cache_key("m"), {}, {"latency_ms": 1.25})
    assert cache.get("measure", cache_key("m"), tmp_path / "out") == {"latency_ms": 1.25}


def test_the_returned_record_is_a_copy(cache: BuildCache, tmp_path: Path) -> None:
    record = {"list": [1, 2]}
    cache.put(KIND, "k1", {}, record)
    record["list"].append(3)
    got = cache.get(KIND, "k1", tmp_path / "a")
    got["list"].append(4)
    assert cache.get(KIND, "k1", tmp_path / "b") == {"list": [1, 2]}


def test_a_put_of_a_published_key_keeps_the_first_copy(cache: BuildCache, tmp_path: Path) -> None:
    first = _sources(tmp_path / "one", seed=1)
    cache.put(KIND, "k1", first, {"n": 1})
    cache.put(KIND, "k1", _sources(tmp_path / "two", seed=2), {"n": 2})
    assert cache.get(KIND, "k1", tmp_path / "out") == {"n": 1}
    assert _tree(tmp_path / "out") == _expected(first)
    assert cache.stats.for_kind(KIND).puts == 2


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
    cache: BuildCache, tmp_path: Path, files: dict[str, str], error: type[Exception]
) -> None:
    (tmp_path / "model.bin").write_bytes(b"m")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "link").symlink_to(tmp_path / "model.bin")
    with pytest.raises(error):
        cache.put(KIND, "k1", {name: tmp_path / source for name, source in files.items()}, {})
    assert _tree(cache.root / "entries") == {} and _tree(cache.root / "staging") == {}


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


# --------------------------------------------------------------------------- keys


def test_cache_key_is_the_sha256_of_canonical_json() -> None:
    assert cache_key("a", {"b": 1, "a": [1.5, None, True]}) == hashlib.sha256(
        b'["a",{"a":[1.5,null,true],"b":1}]'
    ).hexdigest()


def test_cache_key_is_stable_and_ignores_dict_order() -> None:
    assert cache_key({"x": 1, "y": {"p": 2, "q": 3}}) == cache_key({"y": {"q": 3, "p": 2}, "x": 1})
    assert cache_key([1, 2]) == cache_key((1, 2))
    assert cache_key("a", "b") != cache_key("ab") != cache_key(["a", "b"])
    assert cache_key(1) != cache_key("1") != cache_key(1.0)


def test_cache_key_hashes_numpy_arrays_by_content() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert cache_key(array) == cache_key(array.copy()) == cache_key(np.asfortranarray(array))
    assert cache_key(array) != cache_key(array + 1)
    assert cache_key(array) != cache_key(array.astype(np.float64))
    assert cache_key(array) != cache_key(array.reshape(4, 3))
    assert cache_key(array) != cache_key(array.tobytes())
    assert cache_key({"n": np.int64(3), "f": np.float64(0.5)}) == cache_key({"n": 3, "f": 0.5})


def test_cache_key_handles_paths_and_bytes_explicitly() -> None:
    assert cache_key(Path("a/b.onnx")) == cache_key(PurePosixPath("a/b.onnx"))
    assert cache_key(Path("a/b.onnx")) != cache_key("a/b.onnx")
    assert cache_key(b"abc") == cache_key(bytearray(b"abc")) != cache_key("abc")


@pytest.mark.parametrize("value", [object(), {1, 2}, 1 + 2j, {1: "int key"}, np.array([object()]),
                                   type("Config", (), {})()])
def test_cache_key_refuses_unknown_types(value: object) -> None:
    with pytest.raises(TypeError):
        cache_key({"value": value})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"\x00path": "forged"}])
def test_cache_key_refuses_values_without_a_canonical_form(value: object) -> None:
    with pytest.raises(ValueError):
        cache_key(value)


def test_path_digest_covers_contents_and_names(tmp_path: Path) -> None:
    sources = _sources(tmp_path / "src")
    model, package = sources["model.bin"], sources["nested/model.mlpackage"]
    assert path_digest(model) == hashlib.sha256(model.read_bytes()).hexdigest()
    before = path_digest(package)
    (package / "Data" / "weights" / "w0.bin").write_bytes(b"changed")
    changed = path_digest(package)
    (package / "Data" / "weights" / "w0.bin").rename(package / "Data" / "weights" / "w9.bin")
    assert len({before, changed, path_digest(package)}) == 3


# --------------------------------------------------------------------------- processes


def test_concurrent_puts_of_one_key_leave_one_valid_entry(cache: BuildCache, tmp_path: Path) -> None:
    sources = _sources(tmp_path / "src", file_bytes=256 * 1024, package_files=8)
    key = cache_key("raced")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(time.sleep, [0.1] * 4)  # all four up, so the puts start together and all stage a copy
        pool.starmap(cache.put, [(KIND, key, sources, {"winner": "any"})] * 4)

    assert [path.name for path in (cache.root / "entries" / KIND).iterdir()] == [key]
    assert list((cache.root / "staging").iterdir()) == []
    assert cache.get(KIND, key, tmp_path / "out") == {"winner": "any"}
    assert _tree(tmp_path / "out") == _expected(sources)


def test_a_reader_racing_eviction_sees_a_full_hit_or_a_miss(cache: BuildCache, tmp_path: Path) -> None:
    sources = _sources(tmp_path / "src", file_bytes=512 * 1024, package_files=3)
    expected = _expected(sources)
    key = cache_key("contested")
    cache.put(KIND, key, sources, {"ok": True})
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pool.map(time.sleep, [0.05, 0.05])  # both readers up before the race starts
        pending = []
        for cycle in range(15):
            # A miss takes microseconds, a hit milliseconds: send the reads in small waves, each
            # landing at a different point of the evict/put cycle, instead of one batch that a
            # single eviction window would drain.
            pending += [pool.apply_async(cache.get, (KIND, key, tmp_path / "reads" / str(len(pending) + i)))
                        for i in range(4)]
            time.sleep(0.003 * (cycle % 5))
            cache.evict(0)
            cache.put(KIND, key, sources, {"ok": True})
        results = [result.get(30) for result in pending]
    for index, record in enumerate(results):
        _assert_full_hit_or_clean_miss(record, tmp_path / "reads" / str(index), expected)


def _assert_full_hit_or_clean_miss(record: dict | None, destination: Path, expected: dict) -> None:
    if record is None:
        assert _tree(destination) == {}  # a miss leaves nothing, not even a hidden staging folder
    else:
        assert record == {"ok": True} and _tree(destination) == expected


def test_an_entry_evicted_in_the_middle_of_a_copy_is_a_clean_miss(cache: BuildCache, tmp_path: Path) -> None:
    """Deterministic version of the race: the reader is held inside its first file while the entry goes."""
    sources = _sources(tmp_path / "src")
    key = cache_key("held")
    cache.put(KIND, key, sources, {"ok": True})
    first = _entry(cache, key) / "files" / "model.bin"  # copied first: names are copied in sorted order
    first.unlink()
    os.mkfifo(first)  # the reader blocks in open() until this test opens the other end
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply_async(cache.get, (KIND, key, tmp_path / "read"))
        writer = _open_fifo_writer(first, deadline=time.monotonic() + 20)
        assert cache.evict(0) > 0  # the entry leaves while the reader is inside it
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(sources["model.bin"].read_bytes())  # the first file still arrives intact
        record = result.get(20)
    assert record is None
    assert _tree(tmp_path / "read") == {} and cache.size_bytes() == 0


def _open_fifo_writer(fifo: Path, deadline: float) -> int:
    """Open ``fifo`` for writing once a reader has it open (non-blocking attempts, so a test cannot hang)."""
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd


# --------------------------------------------------------------------------- eviction


def test_eviction_removes_least_recently_used_entries_first(cache: BuildCache, tmp_path: Path) -> None:
    sources = {"w.bin": tmp_path / "w.bin"}
    sources["w.bin"].write_bytes(b"x" * 10_000)
    for name in ("a", "b", "c"):
        cache.put(KIND, name, sources, {"name": name})
    per_entry = cache.size_bytes() // 3
    cache.get(KIND, "a", tmp_path / "out")  # a is now the most recently used

    small = BuildCache(cache.root, max_bytes=int(per_entry * 3.5))
    small.put(KIND, "d", sources, {"name": "d"})
    assert [small.contains(KIND, name) for name in "abcd"] == [True, False, True, True]
    small.put(KIND, "e", sources, {"name": "e"})
    assert [small.contains(KIND, name) for name in "abcde"] == [True, False, False, True, True]
    assert small.size_bytes() <= small.max_bytes

    BuildCache(cache.root, max_bytes=0).put(KIND, "f", sources, {})  # larger than the cache: not kept
    assert cache.size_bytes() == 0 and _tree(cache.root / "trash") == {}


def test_clear_removes_everything(cache: BuildCache, tmp_path: Path) -> None:
    cache.put(KIND, "a", _sources(tmp_path / "src"), {})
    assert cache.size_bytes() > 0
    cache.clear()
    assert cache.size_bytes() == 0 and cache.get(KIND, "a", tmp_path / "out") is None
    cache.put(KIND, "a", _sources(tmp_path / "src2"), {})  # still usable afterwards
    assert cache.contains(KIND, "a")


# --------------------------------------------------------------------------- damage and leftovers


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
def test_a_damaged_entry_is_a_miss_and_is_removed(cache: BuildCache, tmp_path: Path, damage) -> None:
    sources = _sources(tmp_path / "src")
    cache.put(KIND, "k1", sources, {"v": 1})
    damage(_entry(cache, "k1"))

    assert cache.get(KIND, "k1", tmp_path / "out") is None
    assert not _entry(cache, "k1").exists()
    assert _tree(tmp_path / "out") == {} and not (tmp_path / "outside").exists()
    cache.put(KIND, "k1", sources, {"v": 1})  # and it can be stored again
    assert cache.get(KIND, "k1", tmp_path / "out") == {"v": 1}


def test_a_put_replaces_a_damaged_entry(cache: BuildCache, tmp_path: Path) -> None:
    sources = _sources(tmp_path / "src")
    cache.put(KIND, "k1", sources, {"v": 1})
    _garble_record(_entry(cache, "k1"))
    cache.put(KIND, "k1", sources, {"v": 1})
    assert cache.get(KIND, "k1", tmp_path / "out") == {"v": 1}


def test_an_interrupted_put_is_invisible_and_swept_but_a_live_one_is_kept(cache: BuildCache,
                                                                             tmp_path: Path) -> None:
    # What a put killed mid-copy leaves: a staging folder whose lock died with its process.
    dead = cache.root / "staging" / "dead" / "entry"
    (dead / "files").mkdir(parents=True)
    (dead / "files" / "model.bin").write_bytes(b"half")
    (cache.root / "trash" / "old").mkdir()
    (cache.root / "trash" / "old" / "x").write_bytes(b"x")
    live = cache.root / "staging" / "live"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held like a put in progress holds it
    try:
        assert cache.get(KIND, "dead", tmp_path / "out") is None and not cache.contains(KIND, "dead")
        assert cache.size_bytes() == 0
        cache.put(KIND, "k1", _sources(tmp_path / "src"), {})
        assert sorted(path.name for path in (cache.root / "staging").iterdir()) == ["live"]
        assert list((cache.root / "trash").iterdir()) == []
    finally:
        os.close(fd)
    cache.evict()
    assert list((cache.root / "staging").iterdir()) == []


# --------------------------------------------------------------------------- stats, null cache, roots


def test_stats_count_hits_misses_and_puts_per_kind(cache: BuildCache, tmp_path: Path) -> None:
    cache.get(KIND, "a", tmp_path / "o")
    cache.put(KIND, "a", {}, {})
    cache.get(KIND, "a", tmp_path / "o")
    cache.get(KIND, "a", tmp_path / "o")
    cache.put("measure", "m", {}, {})
    assert cache.stats.as_dict() == {
        KIND: {"hits": 2, "misses": 1, "puts": 1},
        "measure": {"hits": 0, "misses": 0, "puts": 1},
    }
    assert (cache.stats.total().hits, cache.stats.total().puts) == (2, 2)
    assert cache.stats.for_kind("never").misses == 0


def test_the_null_cache_never_hits(tmp_path: Path) -> None:
    null = NullCache()
    (tmp_path / "m.bin").write_bytes(b"m")
    null.put(KIND, "k1", {"m.bin": tmp_path / "m.bin"}, {"v": 1})
    assert null.get(KIND, "k1", tmp_path / "out") is None and not (tmp_path / "out").exists()
    assert not null.contains(KIND, "k1") and null.size_bytes() == 0 and null.evict() == 0
    null.clear()
    assert null.stats.as_dict() == {KIND: {"hits": 0, "misses": 1, "puts": 0}}
    with pytest.raises(ValueError):
        null.put(KIND, "k1", {"../x": tmp_path / "m.bin"}, {})


def test_an_unwritable_root_is_a_clear_output_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(OutputError) as error:
        BuildCache(tmp_path / "a-file" / "cache")
    assert "--cache DIR" in str(error.value) and "--no-cache" in str(error.value)


def test_the_default_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert BuildCache.default_root() == tmp_path / "explicit"
    monkeypatch.delenv("EDGEKIT_CACHE")
    assert BuildCache.default_root() == tmp_path / "xdg" / "edgekit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert BuildCache.default_root() == tmp_path / "home" / ".cache" / "edgekit"
    assert BuildCache().root == tmp_path / "home" / ".cache" / "edgekit"
    assert (BuildCache().root / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_max_bytes_must_be_a_non_negative_int(tmp_path: Path) -> None:
    assert BuildCache(tmp_path / "c").max_bytes == 5 * 1024**3
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            BuildCache(tmp_path / "c", max_bytes=bad)  # type: ignore[arg-type]

