"""Removal (``edgekit.cache.removal``): LRU eviction, clear, leftovers, and readers racing them."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time
from pathlib import Path
from types import ModuleType

from edgekit.cache import BuildCache, cache_key

KIND = "export"


# --------------------------------------------------------------------------- processes


def test_a_reader_racing_eviction_sees_a_full_hit_or_a_miss(cache: BuildCache, kit: ModuleType,
                                                            tmp_path: Path) -> None:
    sources = kit.sources(tmp_path / "src", file_bytes=512 * 1024, package_files=3)
    expected = kit.expected(sources)
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
        _assert_full_hit_or_clean_miss(kit, record, tmp_path / "reads" / str(index), expected)


def _assert_full_hit_or_clean_miss(kit: ModuleType, record: dict | None, destination: Path, expected: dict) -> None:
    if record is None:
        assert kit.tree(destination) == {}  # a miss leaves nothing, not even a hidden staging folder
    else:
        assert record == {"ok": True} and kit.tree(destination) == expected


def test_an_entry_evicted_in_the_middle_of_a_copy_is_a_clean_miss(cache: BuildCache, kit: ModuleType,
                                                                  tmp_path: Path) -> None:
    """Deterministic version of the race: the reader is held inside its first file while the entry goes."""
    sources = kit.sources(tmp_path / "src")
    key = cache_key("held")
    cache.put(KIND, key, sources, {"ok": True})
    first = kit.entry(cache, key) / "files" / "model.bin"  # copied first: names are copied in sorted order
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
    assert kit.tree(tmp_path / "read") == {} and cache.size_bytes() == 0


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


def test_eviction_removes_least_recently_used_entries_first(cache: BuildCache, kit: ModuleType,
                                                            tmp_path: Path) -> None:
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
    assert cache.size_bytes() == 0 and kit.tree(cache.root / "trash") == {}


def test_clear_removes_everything(cache: BuildCache, kit: ModuleType, tmp_path: Path) -> None:
    cache.put(KIND, "a", kit.sources(tmp_path / "src"), {})
    assert cache.size_bytes() > 0
    cache.clear()
    assert cache.size_bytes() == 0 and cache.get(KIND, "a", tmp_path / "out") is None
    cache.put(KIND, "a", kit.sources(tmp_path / "src2"), {})  # still usable afterwards
    assert cache.contains(KIND, "a")


# --------------------------------------------------------------------------- leftovers


def test_an_interrupted_put_is_invisible_and_swept_but_a_live_one_is_kept(cache: BuildCache, kit: ModuleType,
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
        cache.put(KIND, "k1", kit.sources(tmp_path / "src"), {})
        assert sorted(path.name for path in (cache.root / "staging").iterdir()) == ["live"]
        assert list((cache.root / "trash").iterdir()) == []
    finally:
        os.close(fd)
    cache.evict()
    assert list((cache.root / "staging").iterdir()) == []
