"""install checks the release's minimum runtime versions against the runtimes installed on the device."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from edgekit.errors import InputError
from edgekit.release.manifest import write_manifest
from edgekit.release.runtimes import check_runtimes, fit


def _artifact(fmt: str, minimum: str) -> dict[str, object]:
    return {"path": f"t/model.{fmt}", "format": fmt, "min_runtime_version": minimum}


@pytest.mark.parametrize(("fmt", "minimum", "installed", "status"), [
    ("onnx", "1.18.0", {"onnxruntime": "1.32.0"}, "ok"),
    ("onnx", "1.18.0", {"onnxruntime": "1.17.3"}, "too old"),
    ("onnx", "1.18.0", {"ai-edge-litert": "2.3.0"}, "missing"),
    # The flatbuffer counts in TensorFlow Lite releases; tflite-runtime does too.
    ("tflite", "2.16.0", {"tflite-runtime": "2.14.0"}, "too old"),
    ("tflite", "2.14.0", {"tflite-runtime": "2.14.0"}, "ok"),
    # LiteRT renumbered: every release runs what TFLite 2.17 runs; above that it cannot be told.
    ("tflite", "2.0.0", {"ai-edge-litert": "1.0.1"}, "ok"),
    ("tflite", "2.21.0", {"ai-edge-litert": "2.3.0"}, "unknown"),
    ("executorch", "1.5.1", {"executorch": "1.4.0"}, "too old"),
    ("executorch", "1.5.1", {"executorch": "1.5.1"}, "ok"),
    ("onnx", "1.18.0", {"onnxruntime": "1.19.0.dev20260101"}, "unknown"),
    ("coreml", "iOS 17", {}, "not checked"),
])
def test_each_artifact_is_judged_against_the_runtimes_installed(fmt: str, minimum: str, installed: dict[str, str],
                                                                  status: str) -> None:
    assert fit(_artifact(fmt, minimum), installed).status == status


def test_a_release_nothing_here_can_run_is_refused_naming_what_each_artifact_needs() -> None:
    manifest = {"artifacts": [_artifact("onnx", "1.18.0"), _artifact("tflite", "2.16.0")]}
    with pytest.raises(InputError) as refused:
        check_runtimes(manifest, {"onnxruntime": "1.16.0"})
    assert "onnxruntime >= 1.18.0 (onnxruntime 1.16.0 installed): too old" in refused.value.message
    assert "ai-edge-litert or tflite-runtime or tensorflow >= 2.16.0: missing" in refused.value.message
    assert "--no-runtime-check" in (refused.value.fix or "")
    # One runnable artifact is enough: the device uses that one.
    fits = check_runtimes(manifest, {"onnxruntime": "1.16.0", "tflite-runtime": "2.16.1"})
    assert [f.status for f in fits] == ["too old", "ok"]


def test_an_os_requirement_alone_is_not_refused() -> None:
    assert [f.status for f in check_runtimes({"artifacts": [_artifact("coreml", "iOS 17")]}, {})] == ["not checked"]


def _onnx_only_build(kit: ModuleType, folder: Path, minimum: str) -> Path:
    """The Pi build with only its ONNX artifact, which needs onnxruntime ``minimum``."""
    build = kit.make_build(folder)
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["format"] == "onnx"]
    manifest["artifacts"][0]["min_runtime_version"] = minimum
    manifest["targets"] = [t for t in manifest["targets"] if t["name"] == "raspberry-pi-4"]
    write_manifest(build, manifest)
    return build


def test_install_refuses_a_release_this_devices_runtime_is_too_old_for(kit: ModuleType, keys, tmp_path: Path) -> None:
    build = _onnx_only_build(kit, tmp_path / "build", "99.0.0")  # newer than any onnxruntime installed here
    bundled = kit.run("bundle", build, "--key", keys.private, "--version", "1.0.0", "-o", tmp_path / "out", "--json")
    assert bundled.exit_code == 0, bundled.stderr
    bundle = Path(bundled.json()["bundles"][0]["path"])
    store = tmp_path / "store"

    refused = kit.run("install", bundle, "--into", store, "--key", keys.public, "--json")
    assert refused.exit_code == 2
    assert refused.json()["ok"] is False
    assert "onnxruntime >= 99.0.0" in refused.json()["error"] and "too old" in refused.json()["error"]
    assert not (store / "state.json").exists()

    # Staging a store for another machine is allowed on purpose, and the log says the check was skipped.
    staged = kit.run("install", bundle, "--into", store, "--key", keys.public, "--no-runtime-check", "--json")
    assert staged.exit_code == 0, staged.stderr
    assert staged.json()["status"] == "installed" and staged.json()["runtimes"] == []
    log = [json.loads(line) for line in (store / "install.log").read_text().splitlines()]
    assert log[-1]["runtimes"] == "not checked"


def test_install_reports_which_artifacts_run_here(kit: ModuleType, keys, tmp_path: Path) -> None:
    build = _onnx_only_build(kit, tmp_path / "build", "1.18.0")
    bundled = kit.run("bundle", build, "--key", keys.private, "--version", "1.0.0", "-o", tmp_path / "out", "--json")
    bundle = Path(bundled.json()["bundles"][0]["path"])
    store = tmp_path / "store"

    installed = kit.run("install", bundle, "--into", store, "--key", keys.public)
    assert installed.exit_code == 0, installed.stderr
    assert "raspberry-pi-4/digits-cnn.int8.onnx needs onnxruntime >= 1.18.0 (onnxruntime " in installed.stdout
    assert ": ok" in installed.stdout
    log = [json.loads(line) for line in (store / "install.log").read_text().splitlines()]
    assert log[-1]["runtimes"] == {"raspberry-pi-4/digits-cnn.int8.onnx": "ok"}
