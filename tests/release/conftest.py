"""Shared fixtures for the release tests: fake build folders, keys, CLI runs, store snapshots.

Tests reach the helper functions through the ``kit`` fixture (this module),
because pytest's importlib import mode does not let test modules import
their siblings.

Build folders are made by hand (tiny byte strings as artifacts, a manifest
written with write_manifest) so these tests need neither torch nor the build
pipeline. Keys and signatures are real Ed25519.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from edgekit.artifact import sha256_file, size_bytes
from edgekit.cli import main
from edgekit.release.manifest import canonical_bytes, write_manifest
from edgekit.release.signing import generate_keypair

# A fixed issue time a few days ago, so default 90-day expiry is in the future
# and bundles are reproducible.
EPOCH = (int(time.time()) // 86_400 - 3) * 86_400
MODEL = "digits-cnn"
HEX = "ab" * 32


@dataclass
class Outcome:
    """What a CLI run produced."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run(*args: object, env: dict[str, str | None] | None = None, input: str | None = None) -> Outcome:
    """Run ``edgekit ARGS`` through edgekit.cli.main (so errors map to exit codes) inside CliRunner's isolation."""
    runner = CliRunner()
    # The simulated device is a Raspberry Pi 4 on the stable channel, the target of the test bundles.
    base: dict[str, str | None] = {"SOURCE_DATE_EPOCH": str(EPOCH), "EDGEKIT_DEVICE_ID": None,
                                   "EDGEKIT_TARGET": "raspberry-pi-4", "EDGEKIT_CHANNEL": None}
    with runner.isolation(input=input, env={**base, **(env or {})}) as (out, err, _):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return Outcome(code, out.getvalue().decode(), err.getvalue().decode())


def artifact_entry(
    build: Path, target: str, relpath: str, fmt: str, precision: str, passed: bool = True
) -> dict[str, Any]:
    """A build-manifest artifact record for a file or folder already in ``build``."""
    path = build / relpath
    report = relpath + ".report.json"
    (build / report).write_bytes(canonical_bytes({"artifact": relpath, "passed": passed}))
    return {
        "target": target,
        "format": fmt,
        "precision": precision,
        "io": "float",
        "variant": "test",
        "path": relpath,
        "report": report,
        "sha256": sha256_file(path),
        "size_bytes": size_bytes(path),
        "runtime": {"onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml-emulator"}[fmt],
        "min_runtime_version": "1.17",
        "metrics": {"accuracy": 0.979, "accuracy_drop": 0.001, "cosine": 0.999, "latency_p50_ms": 0.1},
        "budgets": {"max_size_mb": 8.0, "max_accuracy_drop": 0.01},
        "checks": [
            {"budget": "max_size_mb", "limit": 8.0, "value": 0.012, "status": "pass" if passed else "fail", "note": ""}
        ],
        "passed": passed,
    }


def make_build(folder: Path, *, seed: str = "v1", failed_target: str | None = None, version: str = "1.0.0") -> Path:
    """A build folder with two targets: a Pi (.onnx + .tflite files) and an iPhone (.mlpackage folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    pi, phone = folder / "raspberry-pi-4", folder / "iphone-ios17"
    pi.mkdir(exist_ok=True)
    (pi / "digits-cnn.int8.onnx").write_bytes(b"ONNX" + seed.encode() * 50 + bytes(range(256)))
    (pi / "digits-cnn.int8.tflite").write_bytes(b"TFL3" + seed.encode() * 40)
    package = phone / "digits-cnn.fp16.mlpackage"
    (package / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True, exist_ok=True)
    (package / "Manifest.json").write_bytes(b'{"fileFormatVersion": "1.0.0"}')
    (package / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"MLMODEL" + seed.encode() * 30)
    (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(b"\x00" * 64 + seed.encode() * 20)
    artifacts = [
        artifact_entry(folder, "raspberry-pi-4", "raspberry-pi-4/digits-cnn.int8.onnx", "onnx", "int8"),
        artifact_entry(folder, "raspberry-pi-4", "raspberry-pi-4/digits-cnn.int8.tflite", "tflite", "int8",
                       passed=failed_target != "raspberry-pi-4"),
        artifact_entry(folder, "iphone-ios17", "iphone-ios17/digits-cnn.fp16.mlpackage", "coreml", "fp16",
                       passed=failed_target != "iphone-ios17"),
    ]  # fmt: skip
    manifest = {
        "schema_version": 1,
        "created_at": "2026-11-26T08:00:00Z",
        "model": {
            "name": MODEL,
            "version": version,
            "source": "factory model.py:create + weights.safetensors",
            "source_sha256": HEX,
        },
        "toolkit": {"edgekit": "0.1.0", "python": "3.11.7", "versions": {"torch": "2.13.0", "onnx": "1.23.2"}},
        "data": {
            "file": "digits_holdout.npz",
            "sha256": HEX,
            "split_sha256": HEX,
            "seed": 0,
            "calibration_size": 128,
            "evaluation_size": 412,
            "labelled": True,
        },
        "reference": {"accuracy": 0.98},
        "targets": [
            {
                "name": "raspberry-pi-4",
                "profile_sha256": HEX,
                "status": "failed" if failed_target == "raspberry-pi-4" else "passed",
                "messages": [],
            },
            {
                "name": "iphone-ios17",
                "profile_sha256": HEX,
                "status": "failed" if failed_target == "iphone-ios17" else "passed",
                "messages": [],
            },
        ],
        "artifacts": artifacts,
    }
    write_manifest(folder, manifest)
    return folder


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path
    other_private: Path
    other_public: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    mine = generate_keypair(folder, "release")
    other = generate_keypair(folder, "intruder")
    return Keys(mine.private, mine.public, other.private, other.public)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> dict[str, Path]:
    """Pi bundles for versions 1.0.0, 1.1.0 and 1.2.0 (distinct contents), built once per session."""
    root = tmp_path_factory.mktemp("bundles")
    made: dict[str, Path] = {}
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        build = make_build(root / f"build-{version}", seed=version)
        outcome = run(
            "bundle",
            build,
            "--key",
            keys.private,
            "--version",
            version,
            "-o",
            root / "out",
            "--target",
            "raspberry-pi-4",
            "--json",
        )
        assert outcome.exit_code == 0, outcome.stderr
        made[version] = Path(outcome.json()["bundles"][0]["path"])
    return made


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (hidden ones too) with a hash of its content or its link target."""
    if not folder.exists():
        return {}
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[key] = "link:" + str(path.readlink())
        elif path.is_dir():
            found[key] = "dir"
        else:
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture()
def kit() -> ModuleType:
    """This module: run, make_build, snapshot, EPOCH and friends."""
    return sys.modules[__name__]
