"""Pipeline guarantees: failures stay contained, interruptions leave nothing a manifest lists."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgekit import backends
from edgekit.config import BuildConfig, DataSection, ModelSection, load_profile
from edgekit.pipeline import Build, BuildInputs


def _inputs(model_files, out: Path, targets=("jetson-orin-nano",)) -> BuildInputs:
    config = BuildConfig(
        model=ModelSection(name="tiny", factory=model_files.factory, weights=str(model_files.weights)),
        data=DataSection(path=str(model_files.data), calibration_size=32),
        base_dir=model_files.folder,
    )
    return BuildInputs(config, [load_profile(t) for t in targets], model_files.data, out)


def _failing_builder(monkeypatch, precision: str, error: BaseException) -> None:
    real = backends.builder

    def builder(fmt: str):
        module = real(fmt)

        def build(job):
            if job.request.precision == precision:
                raise error
            return module.build(job)

        return SimpleNamespace(build=build)

    monkeypatch.setattr(backends, "builder", builder)


def test_a_crashing_converter_is_contained(tiny_cnn, tmp_path: Path, monkeypatch) -> None:
    _failing_builder(monkeypatch, "fp16", RuntimeError("converter exploded"))
    result = Build(_inputs(tiny_cnn, tmp_path)).run()
    manifest = result.manifest
    assert {a["precision"] for a in manifest["artifacts"]} == {"fp32", "int8", "int4"}
    target = manifest["targets"][0]
    assert target["status"] == "error"
    assert any("converter exploded" in m for m in target["messages"])
    assert result.exit_code == 3


def test_an_interrupted_build_leaves_no_manifest_and_a_rerun_finishes(tiny_cnn, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    first = Build(_inputs(tiny_cnn, out)).run()  # a complete earlier build
    assert (out / "manifest.json").exists()
    with monkeypatch.context() as patch:
        _failing_builder(patch, "int8", KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            Build(_inputs(tiny_cnn, out)).run()
    # the old manifest would list files a rerun replaces, so it is gone
    assert not (out / "manifest.json").exists()
    assert not list(out.rglob("*.tmp")) and not [p for p in out.rglob(".*") if p.name != ".work" and ".work" not in p.parts]
    again = Build(_inputs(tiny_cnn, out)).run()
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["artifacts"]) == len(first.manifest["artifacts"]) == 4
    assert again.exit_code == 0


def test_targets_share_identical_requests(tiny_cnn, tmp_path: Path) -> None:
    build = Build(_inputs(tiny_cnn, tmp_path, targets=("jetson-orin-nano", "raspberry-pi-5")))
    manifest = build.run().manifest
    int8 = [a for a in manifest["artifacts"] if a["format"] == "onnx" and a["precision"] == "int8"]
    assert {a["target"] for a in int8} == {"jetson-orin-nano", "raspberry-pi-5"}
    assert len({a["sha256"] for a in int8}) == 1  # built once, shipped to both
    onnx_requests = [k for k in build.cache if '"format": "onnx"' in k]
    assert len(onnx_requests) == 4
