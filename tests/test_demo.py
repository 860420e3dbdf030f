"""`edgekit demo` end to end on one shipped sample: build, validate, sign, bundle, verify."""

import json
from pathlib import Path

import pytest

from edgekit.release.signing import load_public_key
from edgekit.release.verify import verify_bundle


@pytest.mark.slow
def test_demo_builds_bundles_and_verifies_a_sample(tmp_path: Path, cli) -> None:
    out = tmp_path / "demo"
    cache = tmp_path / "cache"
    result = cli("demo", "--sample", "cnn", "-t", "jetson-orin-nano", "-o", out, "--cache", cache)
    assert result.code == 0, result.err
    built = json.loads((out / "cnn" / "build.json").read_text())
    assert built["from_cache"] == 0 and built["built"] > 0 and built["cache"]["root"] == str(cache)
    manifest = json.loads((out / "cnn" / "manifest.json").read_text())
    assert {a["precision"] for a in manifest["artifacts"]} == {"fp32", "fp16", "int8", "int4"}
    assert (out / "cnn" / "report.html").is_file()
    bundles = sorted((out / "cnn" / "bundles").glob("*.tar.gz"))
    assert [b.name for b in bundles] == ["digits-cnn-1.0.0-jetson-orin-nano.tar.gz"]
    verified = verify_bundle(bundles[0], load_public_key(out / "keys" / "demo.pub"), tmp_path / "unpacked")
    assert verified.manifest["release"]["version"] == "1.0.0"
    assert "verified" in result.out


def test_demo_names_unknown_samples(cli, tmp_path: Path) -> None:
    result = cli("demo", "--sample", "nope", "-o", tmp_path)
    assert result.code == 2 and "Known samples" in result.err


@pytest.mark.slow
def test_a_second_demo_takes_its_candidates_from_the_cache(tmp_path: Path, cli) -> None:
    cache = tmp_path / "cache"
    args = ("demo", "--sample", "mlp", "-t", "jetson-orin-nano", "--no-bundle", "--cache", cache)
    first = cli(*args, "-o", tmp_path / "first")
    second = cli(*args, "-o", tmp_path / "second")
    assert first.code == 0 and second.code == 0, first.err + second.err
    logs = [json.loads((tmp_path / run / "mlp" / "build.json").read_text()) for run in ("first", "second")]
    assert logs[1]["from_cache"] == logs[0]["built"] > 0 and logs[1]["built"] == 0
    assert "from the cache" in second.out
    manifests = [json.loads((tmp_path / run / "mlp" / "manifest.json").read_text()) for run in ("first", "second")]
    assert [a["sha256"] for a in manifests[1]["artifacts"]] == [a["sha256"] for a in manifests[0]["artifacts"]]
