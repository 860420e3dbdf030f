"""Pipeline guarantees: failures stay contained, interruptions leave nothing a manifest lists."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
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
    # Devices check inputs against the range calibration saw: a subset of the data's own range.
    (spec,) = manifest["model"]["inputs"]
    x = np.load(tiny_cnn.data)[spec["name"]]
    low, high = spec["range"]
    assert x.min() <= low < high <= x.max()
    target = manifest["targets"][0]
    assert target["status"] == "error"
    assert any("converter exploded" in m for m in target["messages"])
    assert result.exit_code == 3


@pytest.mark.slow
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


@pytest.mark.slow
def test_targets_share_identical_requests(tiny_cnn, tmp_path: Path) -> None:
    build = Build(_inputs(tiny_cnn, tmp_path, targets=("jetson-orin-nano", "raspberry-pi-5")))
    manifest = build.run().manifest
    int8 = [a for a in manifest["artifacts"] if a["format"] == "onnx" and a["precision"] == "int8"]
    assert {a["target"] for a in int8} == {"jetson-orin-nano", "raspberry-pi-5"}
    assert len({a["sha256"] for a in int8}) == 1  # built once, shipped to both
    onnx_requests = [k for k in build.candidates.sets if '"format": "onnx"' in k]
    assert len(onnx_requests) == 4


def test_build_config_chains_distill_and_prune_before_export(tiny_cnn, tmp_path: Path) -> None:
    import numpy as np

    with np.load(tiny_cnn.data) as archive:
        np.savez(tmp_path / "train.npz", x=archive["x"], y=archive["y"])
    config_file = tmp_path / "edgekit.toml"
    config_file.write_text(
        f'[model]\nname = "tiny"\nfactory = "{tiny_cnn.factory}"\nweights = "{tiny_cnn.weights}"\n'
        f'[data]\npath = "{tiny_cnn.data}"\ntrain = "train.npz"\ncalibration_size = 32\n'
        '[build]\ntargets = ["jetson-orin-nano"]\noutput = "out"\nlatency_runs = 5\n'
        '[[overrides.jetson-orin-nano.artifacts]]\nformat = "onnx"\nprecision = "fp32"\n'
        '[distill]\nwidth = 0.5\nepochs = 2\n'
        '[prune]\nsparsity = 0.5\nepochs = 2\nsteps = 2\n'
    )
    from edgekit.config import load_build_config
    from edgekit.pipeline import resolve_inputs

    config = load_build_config(config_file)
    result = Build(resolve_inputs(config, [], None, None)).run()
    manifest = result.manifest
    assert [stage["stage"] for stage in manifest["model"]["compression"]] == ["distill", "prune"]
    assert "uncompressed_accuracy" in manifest["reference"]
    assert manifest["artifacts"][0]["passed"]
    # the shipped model is the student: fewer parameters than the teacher's
    from edgekit.model import load_factory

    teacher = load_factory(tiny_cnn.factory, tiny_cnn.weights, tmp_path).module
    assert manifest["model"]["parameters"] < sum(p.numel() for p in teacher.parameters())


def test_compression_without_training_data_is_refused_before_work(tiny_cnn, tmp_path: Path) -> None:
    from edgekit.config import load_build_config
    from edgekit.errors import InputError
    from edgekit.pipeline import resolve_inputs

    config_file = tmp_path / "edgekit.toml"
    config_file.write_text(
        f'[model]\nfactory = "{tiny_cnn.factory}"\nweights = "{tiny_cnn.weights}"\n'
        f'[data]\npath = "{tiny_cnn.data}"\n[build]\ntargets = ["jetson-orin-nano"]\noutput = "out"\n'
        '[prune]\nsparsity = 0.5\n'
    )
    with pytest.raises(InputError, match="training data"):
        resolve_inputs(load_build_config(config_file), [], None, None)


def test_a_rebuild_removes_what_the_earlier_build_shipped_and_this_one_does_not(tiny_cnn, tmp_path: Path) -> None:
    from edgekit.config import ArtifactRequest

    def fp32_only(inputs: BuildInputs) -> BuildInputs:
        only = [ArtifactRequest(format="onnx", precision="fp32")]
        inputs.targets = [t.model_copy(update={"artifacts": only}) for t in inputs.targets]
        return inputs

    out = tmp_path / "out"
    first = Build(fp32_only(_inputs(tiny_cnn, out, targets=("jetson-orin-nano", "raspberry-pi-5")))).run().manifest
    mine = out / "keep-me.txt"
    mine.write_text("not edgekit's")
    Build(fp32_only(_inputs(tiny_cnn, out, targets=("raspberry-pi-5",)))).run()
    assert all(a["target"] == "raspberry-pi-5" for a in json.loads((out / "manifest.json").read_text())["artifacts"])
    assert any(a["target"] == "jetson-orin-nano" for a in first["artifacts"])
    assert not (out / "jetson-orin-nano").exists()  # its artifacts and reports were listed, so they went
    assert (out / "raspberry-pi-5").is_dir() and mine.read_text() == "not edgekit's"


@pytest.mark.slow
def test_tflite_candidates_are_chosen_by_their_speed_against_fp32(tiny_cnn, tmp_path: Path) -> None:
    from edgekit.config import ArtifactRequest
    from edgekit.select import SAME_SPEED

    inputs = _inputs(tiny_cnn, tmp_path, targets=("raspberry-pi-5",))
    only = [ArtifactRequest(format="tflite", precision="int8")]
    inputs.targets = [t.model_copy(update={"artifacts": only}) for t in inputs.targets]
    (artifact,) = Build(inputs).run().manifest["artifacts"]
    selection = json.loads((tmp_path / artifact["report"]).read_text())["selection"]
    # The backend timed every candidate interleaved with the FP32 model; the pipeline passed that on.
    assert selection["latency_vs_fp32_source"] == "interleaved with the FP32 model"
    assert artifact["metrics"]["latency_vs_fp32"] == selection["latency_vs_fp32"] > 0
    assert ("slower_than_fp32" in selection) == (selection["latency_vs_fp32"] > SAME_SPEED)


def _profile(tmp_path: Path, fmt: str, precision: str = "int8", budgets: str = "") -> Path:
    """A one-artifact profile with no quality budget of its own: only the default fidelity bars apply."""
    path = tmp_path / f"{fmt}-{precision}.toml"
    path.write_text(f'name = "{fmt}-{precision}"\ndescription = "test"\n'
                    '[device]\nkind = "sbc"\narch = "aarch64"\ncores = 4\nram_mb = 1024\n'
                    f'[[artifacts]]\nformat = "{fmt}"\nprecision = "{precision}"\n{budgets}')
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_a_ruined_static_calibration_cannot_ship_on_unlabelled_data(tiny_cnn, tmp_path: Path, fmt: str) -> None:
    """Calibration samples scaled x200 give static INT8 useless ranges; only fidelity can catch it without labels."""
    import numpy as np

    from edgekit.data import Dataset, split

    with np.load(tiny_cnn.data) as archive:
        x = archive["x"].copy()
    calibration_size = 32
    # Split sample numbers the way the build splits samples, to learn which ones calibrate.
    numbers = split(Dataset({"x": np.arange(len(x))}, None), calibration_size, None, seed=0)
    x[numbers.calibration.inputs["x"]] *= 200.0
    data = tmp_path / "ruined.npz"
    np.savez(data, x=x)  # no labels: the accuracy budget cannot decide
    config = BuildConfig(
        model=ModelSection(name="tiny", factory=tiny_cnn.factory, weights=str(tiny_cnn.weights)),
        data=DataSection(path=str(data), calibration_size=calibration_size, task="classification"),
        base_dir=tiny_cnn.folder,
    )
    profile = load_profile(_profile(tmp_path, fmt))
    result = Build(BuildInputs(config, [profile], data, tmp_path / "out")).run()
    (shipped,) = result.manifest["artifacts"]
    report = json.loads((tmp_path / "out" / shipped["report"]).read_text())
    candidates = {c["recipe"]: c for c in report["selection"]["candidates"]}
    static = [c for name, c in candidates.items() if "static" in name]
    assert static and all(not c["passed"] for c in static), "a ruined static calibration must fail its fidelity bar"
    assert all(c["cosine"] < 0.99 for c in static)
    assert "static" not in shipped["variant"] and shipped["passed"]
    assert shipped["metrics"]["cosine"] >= 0.99
    assert {"min_cosine", "min_top1_agreement"} <= set(shipped["quality_decided_by"])


@pytest.mark.slow
def test_a_fixed_batch_program_builds_for_every_format(tiny_cnn, tmp_path: Path) -> None:
    """torch.export without dynamic_shapes (the common case) gives a batch-1 program; it must build and validate."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("fixed_batch_model", tiny_cnn.factory.rsplit(":", 1)[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.create().eval()
    model.load_state_dict(torch.load(tiny_cnn.weights, weights_only=True))
    program = torch.export.export(model, (torch.zeros(1, 1, 8, 8),))
    pt2 = tmp_path / "fixed.pt2"
    torch.export.save(program, str(pt2))
    config = BuildConfig(model=ModelSection(name="fixed", path=str(pt2)),
                         data=DataSection(path=str(tiny_cnn.data), calibration_size=32), base_dir=tmp_path)
    profiles = [load_profile(_profile(tmp_path, fmt, "fp32")) for fmt in ("onnx", "tflite", "coreml")]
    result = Build(BuildInputs(config, profiles, tiny_cnn.data, tmp_path / "out")).run()
    manifest = result.manifest
    assert not [e for t in manifest["targets"] for e in t["errors"]], manifest["targets"]
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx", "tflite", "coreml"}
    assert manifest["model"]["inputs"][0]["shape"][0] == 1
    for artifact in manifest["artifacts"]:
        assert artifact["passed"], (artifact["format"], artifact["checks"])
        assert artifact["metrics"]["samples"] == manifest["data"]["evaluation_size"]
        assert artifact["metrics"]["accuracy_drop"] == 0.0
    assert result.exit_code == 0


def test_labels_beyond_the_models_classes_are_refused_before_any_export(tiny_cnn, tmp_path: Path) -> None:
    import numpy as np

    from edgekit.errors import DataError

    with np.load(tiny_cnn.data) as archive:
        x, y = archive["x"], archive["y"].copy()
    y[5] = 10  # the CNN has 10 classes: 0..9
    data = tmp_path / "labels.npz"
    np.savez(data, x=x, y=y)
    config = BuildConfig(model=ModelSection(name="tiny", factory=tiny_cnn.factory, weights=str(tiny_cnn.weights)),
                         data=DataSection(path=str(data)), base_dir=tiny_cnn.folder)
    with pytest.raises(DataError, match="sample 5 is 10, but the model's first output has 10 class scores"):
        Build(BuildInputs(config, [load_profile("raspberry-pi-4")], data, tmp_path / "out")).run()
    assert not (tmp_path / "out" / ".work").exists() or not any((tmp_path / "out" / ".work").iterdir())


def test_a_manifest_its_own_schema_refuses_is_never_written(tiny_cnn, tmp_path: Path, monkeypatch) -> None:
    from edgekit.artifact import Artifact
    from edgekit.config import ArtifactRequest
    from edgekit.errors import InternalError

    inputs = _inputs(tiny_cnn, tmp_path / "out")
    inputs.targets = [t.model_copy(update={"artifacts": [ArtifactRequest(format="onnx", precision="fp32")]})
                      for t in inputs.targets]
    real = Artifact.facts.fget
    # A backend bug: a census the manifest schema types as an object, written as a list.
    monkeypatch.setattr(Artifact, "facts", property(lambda a: real(a).__class__(**{**real(a).__dict__,
                                                                                   "weights": ["not", "an object"]})))
    with pytest.raises(InternalError, match="its own schema refuses"):
        Build(inputs).run()
    assert not (tmp_path / "out" / "manifest.json").exists()
