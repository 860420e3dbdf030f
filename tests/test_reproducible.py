"""Reproducible bytes: the same inputs give byte-identical candidates in every format, and identical bundles.

Candidates are built below the pipeline's choice (``backends.builder(fmt).build``)
so host timing plays no part. Each backend normalises what its tools write
(docs/reproducibility.md lists every source of variation found and how it is
removed); these tests build twice in clean folders, once also in another
process (protobuf map order and set order follow per-process seeds), and
check that the bytes agree and still run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CALIBRATION = 64
EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z
# One precision per format that exercises its converter and its own quantizer where that is cheap.
CASES = [("onnx", "int8"), ("tflite", "fp32"), ("coreml", "int8"), ("executorch", "fp32")]


# ----------------------------------------------------------------------------------------------- building


def export_job(factory: str, weights: Path, data: Path, fmt: str, precision: str, workdir: Path) -> Any:
    """A job as the pipeline makes one: calibration split, FP32 torch reference, the profile's fidelity bar."""
    import torch

    from edgekit.backends import ExportJob, TensorSpec
    from edgekit.config import ArtifactRequest, load_profile
    from edgekit.fidelity import FidelityTarget
    from edgekit.model import load_factory

    loaded = load_factory(factory, weights, weights.parent)
    with np.load(data) as archive:
        feeds = {name: archive[name] for name in archive.files if name != "y"}
        classes = "y" in archive.files
    feeds = dict(zip(loaded.input_names, feeds.values(), strict=True))
    calibration = {k: v[:CALIBRATION] for k, v in feeds.items()}
    with torch.no_grad():
        out = loaded.module(*[torch.from_numpy(v) for v in calibration.values()])
    reference = tuple(t.numpy() for t in (out if isinstance(out, tuple) else (out,)))
    profile = load_profile("iphone-ios18" if fmt == "coreml" else "raspberry-pi-4")
    bar = profile.budgets_for(precision)
    workdir.mkdir(parents=True, exist_ok=True)
    return ExportJob(
        model=loaded.module, example_inputs=tuple(torch.from_numpy(v[:2]) for v in feeds.values()),
        inputs=tuple(TensorSpec(n, (None, *v.shape[1:]), str(v.dtype)) for n, v in feeds.items()),
        output_names=("logits",) if len(reference) == 1 else ("logits", "embedding"),
        request=ArtifactRequest(format=fmt, precision=precision), profile=profile, calibration=calibration,
        workdir=workdir, stem="m", reference=reference,
        fidelity=FidelityTarget(bar.min_cosine, bar.min_top1_agreement if classes else None, bar.min_sqnr_db),
    )


def build(factory: str, weights: Path, data: Path, fmt: str, precision: str, workdir: Path) -> list[Any]:
    """The candidates the backend builds for one request, into the new folder ``workdir``."""
    from edgekit import backends

    assert not workdir.exists(), "a clean folder"
    return backends.build(export_job(factory, weights, data, fmt, precision, workdir))


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (inside .mlpackage folders too), by relative path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def candidate_digests(artifacts: list[Any], workdir: Path) -> dict[str, str]:
    """``digests`` narrowed to the candidates' own files (what ships)."""
    every = digests(workdir)
    names = [a.path.relative_to(workdir).as_posix() for a in artifacts]
    return {k: v for k, v in every.items() if any(k == n or k.startswith(f"{n}/") for n in names)}


def _child_main(argv: list[str]) -> None:
    """Entry point of the child process: ``factory weights data workdir fmt:precision ...``."""
    factory, weights, data, root = argv[0], Path(argv[1]), Path(argv[2]), Path(argv[3])
    for case in argv[4:]:
        fmt, precision = case.split(":")
        build(factory, weights, data, fmt, precision, root / f"{fmt}-{precision}")


CHILD = ("import importlib.util, sys\n"
         "spec = importlib.util.spec_from_file_location('reproducible_child', sys.argv[1])\n"
         "module = importlib.util.module_from_spec(spec)\n"
         "spec.loader.exec_module(module)\n"
         "module._child_main(sys.argv[2:])\n")


def _run(artifact: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from edgekit.backends import open_session

    session = open_session(artifact.path)
    try:
        return session.run(feeds)
    finally:
        session.close()


def _evaluation(model_files: Any) -> dict[str, np.ndarray]:
    with np.load(model_files.data) as archive:
        return {"x": archive["x"][CALIBRATION:]}


def _torch(model_files: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    from edgekit.model import load_factory

    module = load_factory(model_files.factory, model_files.weights, model_files.folder).module
    with torch.no_grad():
        return module(*[torch.from_numpy(v) for v in feeds.values()]).numpy()


# ------------------------------------------------------------------------------------------- candidates


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "precision"), CASES, ids=[f"{f}-{p}" for f, p in CASES])
def test_candidates_built_twice_in_clean_folders_are_byte_identical(tiny_cnn, tmp_path: Path, fmt: str,
                                                                     precision: str) -> None:
    files = (tiny_cnn.factory, tiny_cnn.weights, tiny_cnn.data)
    first = build(*files, fmt, precision, tmp_path / "a" / "work")
    second = build(*files, fmt, precision, tmp_path / "second-build")
    made = candidate_digests(first, tmp_path / "a" / "work")
    assert made, "the backend made candidates"
    assert candidate_digests(second, tmp_path / "second-build") == made
    # Every file the backend left in its folder, not only the candidates, is the same.
    assert digests(tmp_path / "a" / "work") == digests(tmp_path / "second-build")
    feeds = _evaluation(tiny_cnn)
    want = _torch(tiny_cnn, feeds)
    for artifact in second:
        (got,) = _run(artifact, feeds)
        assert got.shape == want.shape and np.isfinite(got).all(), artifact.variant
        tolerance = 1e-3 if precision == "fp32" else 0.25 * float(np.abs(want).max())
        assert float(np.abs(got - want).max()) <= tolerance, artifact.variant


@pytest.mark.slow
def test_a_build_in_another_process_from_a_moved_model_gives_the_same_bytes(tiny_cnn, tmp_path: Path) -> None:
    """Another process (Core ML's protobuf maps and onnxruntime's calibration set follow per-process seeds) and
    another folder for model.py (its path named the classes' module in TFLite tensor names).

    Both builds run in fresh child processes, with other hash seeds, as two separate builds would."""
    cases = [("coreml", "fp32"), ("onnx", "int8"), ("tflite", "fp32")]
    moved = tmp_path / "checkout" / "elsewhere"
    shutil.copytree(tiny_cnn.folder, moved)
    for folder, out, seed in ((tiny_cnn.folder, "here", "1"), (moved, "child", "12345")):
        factory = f"{folder / Path(tiny_cnn.factory.rsplit(':', 1)[0]).name}:create"
        child = subprocess.run(
            [sys.executable, "-c", CHILD, __file__, factory, str(folder / tiny_cnn.weights.name),
             str(folder / tiny_cnn.data.name), str(tmp_path / out), *[f"{f}:{p}" for f, p in cases]],
            env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, timeout=600, check=False)
        assert child.returncode == 0, child.stderr[-3000:]
    here, there = digests(tmp_path / "here"), digests(tmp_path / "child")
    assert here and here == there


@pytest.mark.slow
def test_one_thread_and_two_threads_give_the_same_bytes(tmp_path: Path) -> None:
    """The local pool's workers had two threads and Ray's one-CPU tasks one: the digits-cnn sample's k-means
    palettization (scikit-learn on OpenMP) wrote another weight.bin until building ran at one thread."""
    samples = Path(__file__).resolve().parents[1] / "sample_models"
    model = (f"{samples / 'cnn' / 'model.py'}:create", str(samples / "cnn" / "weights.safetensors"),
             str(samples / "data" / "digits_holdout.npz"))
    for threads in ("1", "2"):
        child = subprocess.run([sys.executable, "-c", CHILD, __file__, *model, str(tmp_path / threads), "coreml:int4"],
                               env={**os.environ, "OMP_NUM_THREADS": threads}, capture_output=True, text=True,
                               timeout=600, check=False)
        assert child.returncode == 0, child.stderr[-3000:]
    one, two = digests(tmp_path / "1"), digests(tmp_path / "2")
    assert any("palettize4.mlpackage" in name for name in one), "k-means palettization was built"
    assert one == two


@pytest.mark.slow
def test_coreml_normalisation_keeps_the_package_loadable_and_its_outputs(tiny_cnn, tmp_path: Path) -> None:
    import coremltools as ct

    from edgekit.backends.coreml import export
    from edgekit.backends.coreml.reproducible import CONVERSION_DATE, MANIFEST, normalise_package
    from edgekit.backends.coreml.runtime import open_session

    job = export_job(tiny_cnn.factory, tiny_cnn.weights, tiny_cnn.data, "coreml", "fp32", tmp_path / "job")
    model = export.convert(job, "fp32").model
    raw = tmp_path / "raw.mlpackage"
    model.save(str(raw))  # as coremltools writes it
    assert CONVERSION_DATE in ct.models.MLModel(str(raw), skip_model_load=True).user_defined_metadata
    saved = export.save(model, tmp_path / "saved.mlpackage")  # what the backend writes
    again = export.save(model, tmp_path / "again.mlpackage")
    assert digests(saved) == digests(again), "two saves of one model: the same bytes"
    assert json.loads((raw / MANIFEST).read_text()) != json.loads((saved / MANIFEST).read_text())

    loaded = ct.models.MLModel(str(saved), skip_model_load=True)
    metadata = dict(loaded.user_defined_metadata)
    assert CONVERSION_DATE not in metadata and metadata["com.github.apple.coremltools.source"].startswith("torch==")
    raw_spec = ct.models.MLModel(str(raw), skip_model_load=True).get_spec()
    del raw_spec.description.metadata.userDefined[CONVERSION_DATE]
    assert loaded.get_spec() == raw_spec, "the same program, apart from the date"
    before = digests(saved)
    normalise_package(saved)
    assert digests(saved) == before, "normalising is idempotent"

    feeds = _evaluation(tiny_cnn)
    outputs = []
    for package in (raw, saved):
        session = open_session(package)
        outputs.append(session.run(feeds)[0])
        session.close()
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_allclose(outputs[1], _torch(tiny_cnn, feeds), atol=1e-3)


def test_coreml_item_identifiers_follow_the_content(tmp_path: Path) -> None:
    from edgekit.backends.coreml.reproducible import MANIFEST, normalise_manifest

    def package(folder: Path, ids: tuple[str, str], weights: bytes) -> Path:
        data = folder / "Data" / "com.apple.CoreML"
        (data / "weights").mkdir(parents=True)
        (data / "model.mlmodel").write_bytes(b"spec")
        (data / "weights" / "weight.bin").write_bytes(weights)
        entries = {ids[0]: {"author": "com.apple.CoreML", "description": "CoreML Model Specification",
                            "name": "model.mlmodel", "path": "com.apple.CoreML/model.mlmodel"},
                   ids[1]: {"author": "com.apple.CoreML", "description": "CoreML Model Weights",
                            "name": "weights", "path": "com.apple.CoreML/weights"}}
        manifest = {"fileFormatVersion": "1.0.0", "itemInfoEntries": entries, "rootModelIdentifier": ids[0]}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")
        normalise_manifest(folder)
        return folder / MANIFEST

    first = package(tmp_path / "a", ("17dd607e-86dc-4a03-9792-19f00793f32c", "05da8807-02af-472b-adac-8d68eca80b94"), b"w")
    second = package(tmp_path / "b", ("a1b2c3d4-0000-4000-8000-000000000001", "a1b2c3d4-0000-4000-8000-000000000002"), b"w")
    other = package(tmp_path / "c", ("a1b2c3d4-0000-4000-8000-000000000001", "a1b2c3d4-0000-4000-8000-000000000002"), b"v")
    assert first.read_bytes() == second.read_bytes(), "random identifiers replaced by content-derived ones"
    manifest = json.loads(first.read_text())
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    assert root["name"] == "model.mlmodel" and len(manifest["itemInfoEntries"]) == 2
    assert all(len(key) == 36 and key == key.lower() for key in manifest["itemInfoEntries"])
    changed = json.loads(other.read_text())
    assert changed["rootModelIdentifier"] == manifest["rootModelIdentifier"], "the spec is the same"
    assert set(changed["itemInfoEntries"]) != set(manifest["itemInfoEntries"]), "other weights, other identifier"


# ----------------------------------------------------------------------------------------------- bundles


def _build_folder(folder: Path, manifest_for: Any) -> Path:
    """A build folder the bundle command accepts: a file artifact and a folder artifact (files nested)."""
    package = folder / "phone" / "m.mlpackage"
    (package / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    (package / "Manifest.json").write_text("{}\n")
    (package / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"spec")
    (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(bytes(range(256)) * 64)
    shutil.copyfile(manifest_for(package, {"phone": {"max_size_mb": 1.0}}), folder / "manifest.json")
    return folder


def _disturb(folder: Path) -> None:
    """Change everything a careless archiver would record: modes, mtimes, and creation order."""
    for index, path in enumerate(sorted(folder.rglob("*"), reverse=True)):
        os.utime(path, (1_000_000 + index * 7919, 1_000_000 + index * 7919))
        if path.is_file():
            path.chmod(0o600 if index % 2 else 0o664)


def test_a_bundle_made_twice_from_one_build_is_byte_identical(tmp_path: Path, manifest_for, cli,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.release.timestamps import format_utc

    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    build_dir = _build_folder(tmp_path / "build", manifest_for)
    assert cli("keygen", "-o", tmp_path / "keys", "--no-encrypt").code == 0
    key = tmp_path / "keys" / "edgekit.key"
    first = cli("bundle", build_dir, "--key", key, "--version", "1.0.0", "-o", tmp_path / "one", "--json")
    assert first.code == 0, first.err
    copy = tmp_path / "elsewhere" / "copied-build"
    shutil.copytree(build_dir, copy)
    _disturb(copy)
    second = cli("bundle", copy, "--key", key, "--version", "1.0.0", "-o", tmp_path / "two", "--json")
    assert second.code == 0, second.err
    (name,) = [p.name for p in (tmp_path / "one").iterdir()]
    data = (tmp_path / "one" / name).read_bytes()
    assert data == (tmp_path / "two" / name).read_bytes()

    assert data[3] == 0 and data[4:8] == b"\0\0\0\0", "gzip header: no file name, mtime 0"
    with tarfile.open(tmp_path / "one" / name, "r:gz") as tar:
        members = tar.getmembers()
        release = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    names = [m.name for m in members]
    assert names[:2] == ["manifest.json", "manifest.sig"] and names[2:] == sorted(names[2:])
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(EPOCH, 0, 0, "", "", 0o644)}
    assert release["release"]["issued_at"] == format_utc(EPOCH)
    assert gzip.decompress(data)  # one well-formed gzip member


def test_manifest_timestamps_follow_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.release.timestamps import build_time

    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    assert build_time() == "2026-01-01T00:00:00Z"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert build_time() != "2026-01-01T00:00:00Z"


def test_an_ed25519_signature_is_deterministic() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgekit.release.signing import sign

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert sign(b"manifest", key) == sign(b"manifest", key)
