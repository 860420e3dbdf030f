"""The cache objects (``edgekit.cache.store``): round trips, stats, the null cache, roots and limits."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from edgekit.cache import BuildCache, NullCache, cache_key
from edgekit.errors import OutputError

KIND = "export"


# --------------------------------------------------------------------------- round trip


def test_a_put_entry_comes_back_with_its_files_folders_and_record(cache: BuildCache, kit: ModuleType,
                                                                  tmp_path: Path) -> None:
    sources = kit.sources(tmp_path / "src")
    key = cache_key("model", 1)
    assert cache.get(KIND, key, tmp_path / "miss") is None
    assert not (tmp_path / "miss").exists()

    cache.put(KIND, key, sources, {"sha256": "abc", "metrics": {"accuracy": 0.9}})
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.bin").write_bytes(b"stale")
    (out / "unrelated.txt").write_bytes(b"keep")

    assert cache.get(KIND, key, out) == {"sha256": "abc", "metrics": {"accuracy": 0.9}}
    assert kit.tree(out) == {**kit.expected(sources), "unrelated.txt": b"keep"}
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


def test_a_put_of_a_published_key_keeps_the_first_copy(cache: BuildCache, kit: ModuleType, tmp_path: Path) -> None:
    first = kit.sources(tmp_path / "one", seed=1)
    cache.put(KIND, "k1", first, {"n": 1})
    cache.put(KIND, "k1", kit.sources(tmp_path / "two", seed=2), {"n": 2})
    assert cache.get(KIND, "k1", tmp_path / "out") == {"n": 1}
    assert kit.tree(tmp_path / "out") == kit.expected(first)
    assert cache.stats.for_kind(KIND).puts == 2


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
