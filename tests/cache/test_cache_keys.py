"""Cache keys (``edgekit.cache.keys``): canonical, type-strict ``cache_key`` and content ``path_digest``."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from types import ModuleType

import numpy as np
import pytest

from edgekit.cache import cache_key, path_digest


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


def test_path_digest_covers_contents_and_names(kit: ModuleType, tmp_path: Path) -> None:
    sources = kit.sources(tmp_path / "src")
    model, package = sources["model.bin"], sources["nested/model.mlpackage"]
    assert path_digest(model) == hashlib.sha256(model.read_bytes()).hexdigest()
    before = path_digest(package)
    (package / "Data" / "weights" / "w0.bin").write_bytes(b"changed")
    changed = path_digest(package)
    (package / "Data" / "weights" / "w0.bin").rename(package / "Data" / "weights" / "w9.bin")
    assert len({before, changed, path_digest(package)}) == 3
