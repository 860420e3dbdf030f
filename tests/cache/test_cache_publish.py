"""Publishing a put (``edgekit.cache.publish``): one complete entry per key, whoever races for it."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from types import ModuleType

from edgekit.cache import BuildCache, cache_key

KIND = "export"


def test_concurrent_puts_of_one_key_leave_one_valid_entry(cache: BuildCache, kit: ModuleType,
                                                          tmp_path: Path) -> None:
    sources = kit.sources(tmp_path / "src", file_bytes=256 * 1024, package_files=8)
    key = cache_key("raced")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(time.sleep, [0.1] * 4)  # all four up, so the puts start together and all stage a copy
        pool.starmap(cache.put, [(KIND, key, sources, {"winner": "any"})] * 4)

    assert [path.name for path in (cache.root / "entries" / KIND).iterdir()] == [key]
    assert list((cache.root / "staging").iterdir()) == []
    assert cache.get(KIND, key, tmp_path / "out") == {"winner": "any"}
    assert kit.tree(tmp_path / "out") == kit.expected(sources)


def test_a_put_replaces_a_damaged_entry(cache: BuildCache, kit: ModuleType, tmp_path: Path) -> None:
    sources = kit.sources(tmp_path / "src")
    cache.put(KIND, "k1", sources, {"v": 1})
    (kit.entry(cache, "k1") / "entry.json").write_text("{not json")  # a garbled record
    cache.put(KIND, "k1", sources, {"v": 1})
    assert cache.get(KIND, "k1", tmp_path / "out") == {"v": 1}
