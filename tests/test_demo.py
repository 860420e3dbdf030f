"""`edgekit demo` end to end on one shipped sample: build, validate, sign, bundle, verify."""

import json
from pathlib import Path

from edgekit.release.signing import load_public_key
from edgekit.release.verify import verify_bundle


def test_demo_builds_bundles_and_verifies_a_sample(tmp_path: Path, cli) -> None:
    out = tmp_path / "demo"
    result = cli("demo", "--sample", "cnn", "-t", "jetson-orin-nano", "-o", out)
    assert result.code == 0, result.err
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
