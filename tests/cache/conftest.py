"""Shared fixtures for the build cache tests: real files, real processes, no mocks.

Tests reach the helper functions through the ``kit`` fixture (this module),
because pytest's importlib import mode does not let test modules import
their siblings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType

import numpy as np
import pytest

from edgekit.cache import BuildCache

KIND = "export"


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) mapped to its bytes, or None for a folder."""
    if not folder.exists():
        return {}
    return {
        path.relative_to(folder).as_posix(): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def sources(base: Path, seed: int = 0, file_bytes: int = 4096, package_files: int = 3) -> dict[str, Path]:
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


def entry(cache: BuildCache, key: str, kind: str = KIND) -> Path:
    return cache.root / "entries" / kind / key


def expected(sources: dict[str, Path]) -> dict[str, bytes | None]:
    expected: dict[str, bytes | None] = {}
    for name, source in sources.items():
        parts = PurePosixPath(name).parts
        for end in range(1, len(parts)):
            expected["/".join(parts[:end])] = None
        expected[name] = None if source.is_dir() else source.read_bytes()
        if source.is_dir():
            expected.update({f"{name}/{rel}": data for rel, data in tree(source).items()})
    return expected


@pytest.fixture
def cache(tmp_path: Path) -> BuildCache:
    return BuildCache(tmp_path / "cache")


@pytest.fixture()
def kit() -> ModuleType:
    """This module: tree, sources, entry, expected and KIND."""
    return sys.modules[__name__]
