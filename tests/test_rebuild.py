"""`edgekit rebuild`: a build's artifacts made again from their recorded recipes, with every difference explained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

@pytest.fixture(scope="module")
def built(tiny_cnn, tmp_path_factory, write_profile):  # noqa: ANN001, ANN201 - fixture
    """One build of the tiny CNN for a float ONNX target and a calibrated full-integer TFLite target."""
    from edgekit.cli import main

    folder = tmp_path_factory.mktemp("rebuild")
    profiles = ["-t", write_profile(folder, "rebuild-float", [("onnx", "fp32")]),
                "-t", write_profile(folder, "rebuild-micro", [("tflite", "int8", "int8")], kind="microcontroller")]
    args = [tiny_cnn.factory, "--weights", str(tiny_cnn.weights), "--data", str(tiny_cnn.data), *map(str, profiles)]
    try:
        main(["build", *args, "-o", str(folder / "out"), "--json"])
    except SystemExit as exc:
        pytest.fail(f"the build exited {exc.code}")
    return folder, args


@pytest.mark.slow
def test_a_rebuild_reproduces_every_recorded_hash(built, cli) -> None:  # noqa: ANN001
    folder, args = built
    result = cli("rebuild", folder / "out" / "manifest.json", *args, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["differs"] == 0 and len(report["artifacts"]) == 2
    micro = next(a for a in report["artifacts"] if a["target"] == "rebuild-micro")
    assert micro["firmware"] and set(micro["firmware"].values()) == {"same"}  # the C library too


@pytest.mark.slow
def test_changed_calibration_data_is_blamed_on_the_artifact_it_changes(built, tiny_cnn, cli, tmp_path: Path) -> None:  # noqa: ANN001
    folder, args = built
    with np.load(tiny_cnn.data) as original:
        changed = tmp_path / "data.npz"
        np.savez(changed, x=original["x"] * np.float32(0.5), y=original["y"])
    args = [changed if a == str(tiny_cnn.data) else a for a in args]
    result = cli("rebuild", folder / "out" / "manifest.json", *args, "--json")
    assert result.code == 1, result.err
    by_target = {a["target"]: a for a in json.loads(result.out)["artifacts"]}
    assert by_target["rebuild-float"]["same"]  # the FP32 export does not read the data's values
    micro = by_target["rebuild-micro"]
    assert not micro["same"] and any(c.startswith("data file data.npz") for c in micro["causes"])


def test_a_file_that_is_no_manifest_is_refused(tmp_path: Path, cli, tiny_cnn) -> None:  # noqa: ANN001
    bogus = tmp_path / "manifest.json"
    bogus.write_text(json.dumps({"hello": 1}))
    result = cli("rebuild", bogus, tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", tiny_cnn.data)
    assert result.code == 2 and "is not an edgekit build manifest" in result.err
