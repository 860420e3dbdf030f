"""Builds through the content-addressed cache and on a process pool: same bytes, less work, honest timings."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edgekit.artifact import sha256_file

def _profile(write_profile, folder: Path, name: str, second: str = "fp16") -> Path:  # noqa: ANN001
    """Single-recipe precisions: no timing decides what ships."""
    return write_profile(folder, name, [("onnx", "fp32"), ("onnx", second)])


def _build(cli, tiny_cnn, out: Path, *extra) -> tuple[dict, dict, float]:  # noqa: ANN001
    started = time.perf_counter()
    result = cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", tiny_cnn.data, "-o", out,
                 "--json", *extra)
    assert result.code == 0, result.err
    log = json.loads((out / "build.json").read_text())
    return json.loads(result.out), log, time.perf_counter() - started


def _hashes(out: Path, manifest: dict) -> dict[str, str]:
    return {a["path"]: sha256_file(out / a["path"]) for a in manifest["artifacts"]}


@pytest.mark.slow
def test_a_second_build_comes_from_the_cache_with_the_same_bytes_and_manifest(cli, tiny_cnn, tmp_path: Path,
        write_profile) -> None:  # noqa: ANN001
    profile = _profile(write_profile, tmp_path, "cached-a")
    cache = tmp_path / "cache"
    first, log1, _ = _build(cli, tiny_cnn, tmp_path / "one", "-t", profile, "--cache", cache, "--executor", "serial")
    second, log2, _ = _build(cli, tiny_cnn, tmp_path / "two", "-t", profile, "--cache", cache, "--executor", "serial")
    assert (log1["built"], log1["from_cache"]) == (2, 0) and (log2["built"], log2["from_cache"]) == (0, 2)
    assert _hashes(tmp_path / "one", first) == _hashes(tmp_path / "two", second)
    first.pop("created_at"), second.pop("created_at")
    assert first == second  # measurements too: a cache hit carries the first build's numbers, not new ones


@pytest.mark.slow
def test_one_changed_profile_rebuilds_only_what_it_needs(cli, tiny_cnn, tmp_path: Path,
        write_profile) -> None:  # noqa: ANN001
    cache = tmp_path / "cache"
    a, b = _profile(write_profile, tmp_path, "cached-a"), _profile(write_profile, tmp_path, "cached-b")
    _build(cli, tiny_cnn, tmp_path / "one", "-t", a, "-t", b, "--cache", cache, "--executor", "serial")
    _profile(write_profile, tmp_path, "cached-b", second="int4")  # b now wants int4 instead of fp16
    _, log, _ = _build(cli, tiny_cnn, tmp_path / "two", "-t", a, "-t", b, "--cache", cache, "--executor", "serial")
    built = [s["request"]["precision"] for s in log["sets"] if s["origin"] == "built"]
    assert built == ["int4"] and log["from_cache"] == 2


@pytest.mark.slow
def test_a_process_pool_builds_the_same_bytes_and_marks_its_timings(cli, tiny_cnn, tmp_path: Path,
        write_profile) -> None:  # noqa: ANN001
    profile = _profile(write_profile, tmp_path, "pooled")
    serial, _, _ = _build(cli, tiny_cnn, tmp_path / "serial", "-t", profile, "--no-cache", "--executor", "serial")
    pooled, log, _ = _build(cli, tiny_cnn, tmp_path / "pool", "-t", profile, "--no-cache", "--executor", "local",
                            "--workers", "2")
    assert log["executor"] == {"name": "local", "workers": 2} and log["built"] == 2
    assert _hashes(tmp_path / "serial", serial) == _hashes(tmp_path / "pool", pooled)
    assert all(a["metrics"]["timed_under_load"] == 2.0 for a in pooled["artifacts"])
    assert all("timed_under_load" not in a["metrics"] for a in serial["artifacts"])


@pytest.mark.slow
def test_a_failure_in_a_worker_is_recorded_like_one_in_process(cli, tiny_cnn, tmp_path: Path,
        write_profile) -> None:  # noqa: ANN001
    profile = write_profile(tmp_path, "broken", [("onnx", "fp32"), ("onnx", "int8", "int8")])  # ONNX has no int8 I/O
    result = cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", tiny_cnn.data, "-t", profile,
                 "-o", tmp_path / "out", "--json", "--no-cache", "--executor", "local", "--workers", "2")
    assert result.code == 2, result.err
    manifest = json.loads(result.out)
    (target,) = manifest["targets"]
    assert target["status"] == "error" and "int8 I/O" in target["errors"][0]["message"]
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32"]  # the other request still shipped


def test_trained_models_are_kept_and_loaded_back(tiny_cnn, tmp_path: Path) -> None:  # noqa: ANN001
    import numpy as np

    from edgekit.cache import BuildCache
    from edgekit.compress.config import PruneConfig
    from edgekit.data import Dataset
    from edgekit.model import load_factory
    from edgekit.pipeline.cached import VARIANTS, compress_cached, weights_digest

    model = load_factory(tiny_cnn.factory, tiny_cnn.weights, tiny_cnn.folder)
    with np.load(tiny_cnn.data) as data:
        train = Dataset({"x": data["x"]}, data["y"], sha256="train")
    cache = BuildCache(tmp_path / "cache")
    prune = PruneConfig(sparsity=0.5, epochs=2, steps=1)
    first, reports = compress_cached(cache, model, train, prune=prune, distill=None, base_dir=tmp_path)
    again, reports_again = compress_cached(cache, model, train, prune=prune, distill=None, base_dir=tmp_path)
    assert cache.stats.for_kind(VARIANTS).hits == 1 and cache.stats.for_kind(VARIANTS).puts == 1
    assert weights_digest(again.module) == weights_digest(first.module) and again.sha256 == first.sha256
    assert json.dumps(reports_again, sort_keys=True, default=str) == json.dumps(reports, sort_keys=True, default=str)


def test_executor_choices_are_checked() -> None:
    from edgekit.errors import InputError
    from edgekit.pipeline.executor import SerialExecutor, make_executor

    with pytest.raises(InputError, match="unknown executor 'gpu'"):
        make_executor("gpu")
    with pytest.raises(InputError, match="--address names a Ray cluster"):
        make_executor("local", address="auto")
    outcomes = SerialExecutor().map(lambda x: 1 // x, [1, 0])
    assert outcomes[0] == 1 and isinstance(outcomes[1], ZeroDivisionError)  # one failing task, the other's result
