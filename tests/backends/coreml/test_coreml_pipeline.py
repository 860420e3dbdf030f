"""`edgekit build -t iphone-ios17` end to end: Core ML artifacts validated in the emulator and listed in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.artifact import sha256_file

pytestmark = pytest.mark.slow


def test_build_for_an_iphone_profile(tiny_cnn, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    result = cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", tiny_cnn.data,
                 "-t", "iphone-ios17", "-o", out, "--json")
    manifest = json.loads((out / "manifest.json").read_text())
    assert not [t for t in manifest["targets"] if t.get("errors")], manifest["targets"]
    entries = {a["precision"]: a for a in manifest["artifacts"]}
    assert set(entries) == {"fp16", "int8"}
    for entry in entries.values():
        path = out / entry["path"]
        assert path.is_dir() and path.suffix == ".mlpackage"
        assert sha256_file(path) == entry["sha256"]
        assert entry["emulated"] is True and entry["min_runtime_version"] == "iOS 17"
        assert entry["metrics"]["accuracy"] >= 0.97  # labels are the FP32 model's own predictions
    # the FP16 program is held to the float-agreement limit; compressed ones are judged by accuracy instead
    agreement = [c for c in entries["fp16"]["checks"] if c["budget"] == "float_agreement"]
    assert [(c["limit"], c["status"]) for c in agreement] == [(1e-2, "pass")]
    assert not [c for c in entries["int8"]["checks"] if c["budget"] == "float_agreement"]
    assert entries["int8"]["weights"]["by_precision"]["int8"] > 0
    assert entries["int8"]["size_bytes"] < entries["fp16"]["size_bytes"]
    # latency and RAM are not judged off the device (and an emulator's are not the iPhone's): every check passes
    assert result.code == 0, result.err
