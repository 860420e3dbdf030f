"""Real releases for the runtime tests: ONNX models written with onnx.helper, bundled, signed and installed.

Three kinds of model share one interface (``x`` [N, 16] float32 in the
calibrated range [-1, 1], ``logits`` [N, 4]): ``good`` (a small MLP),
``failing`` (a Reshape that fails at run time on every input) and ``slow``
(the same MLP followed by a long chain of 256x256 MatMuls, milliseconds
where the good one takes microseconds). Runtime tests reach the helpers
through the ``rt`` fixture (this module): test modules cannot import siblings.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import onnx
from edgekit.artifact import sha256_file, size_bytes
from edgekit.cli import main
from edgekit.release.manifest import canonical_bytes, write_manifest
from edgekit.release.signing import generate_keypair
from edgekit.release.store import install_bundle
from onnx import TensorProto, helper, numpy_helper

EPOCH = (int(time.time()) // 86_400 - 3) * 86_400
MODEL = "digits-mlp"
TARGET = "raspberry-pi-4"
FEATURES = 16
SLOW_DEPTH = 400  # 256x256 MatMuls sharing one weight: ~2.5 ms per sample here, against ~0.02 ms for the good model


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run(*args: object, env: dict[str, str | None] | None = None) -> Outcome:
    """``edgekit ARGS`` through edgekit.cli.main, as the release tests run it."""
    runner = CliRunner()
    base: dict[str, str | None] = {"SOURCE_DATE_EPOCH": str(EPOCH), "EDGEKIT_DEVICE_ID": None,
                                   "EDGEKIT_TARGET": TARGET, "EDGEKIT_CHANNEL": None}
    with runner.isolation(env={**base, **(env or {})}) as (out, err, _):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return Outcome(code, out.getvalue().decode(), err.getvalue().decode())


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w1": rng.standard_normal((FEATURES, 32)).astype(np.float32),
            "w2": rng.standard_normal((32, 4)).astype(np.float32)}


def onnx_model(path: Path, kind: str = "good", seed: int = 0) -> Path:
    """One of the three model kinds (see the module docstring), or ``garbage`` bytes no runtime loads."""
    if kind == "garbage":
        path.write_bytes(b"not a model " * 64)
        return path
    weights = _weights(seed)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"])]
    last = "r"
    if kind == "slow":
        rng = np.random.default_rng(1)
        weights["up"] = rng.standard_normal((32, 256)).astype(np.float32) / 8
        weights["down"] = rng.standard_normal((256, 32)).astype(np.float32) / 16
        weights["m"] = (np.eye(256) + rng.standard_normal((256, 256)) / 256).astype(np.float32)
        nodes.append(helper.make_node("MatMul", ["r", "up"], ["s0"]))
        for i in range(SLOW_DEPTH):  # one shared weight: compute without megabytes of file
            nodes.append(helper.make_node("MatMul", [f"s{i}", "m"], [f"s{i + 1}"]))
        nodes.append(helper.make_node("MatMul", [f"s{SLOW_DEPTH}", "down"], ["back"]))
        last = "back"
    if kind == "failing":
        weights["bad_shape"] = np.array([-1, 7], dtype=np.int64)  # 32 values per row never split into sevens
        nodes.append(helper.make_node("Reshape", ["r", "bad_shape"], ["bent"]))
        nodes.append(helper.make_node("Slice", ["bent", "zero", "four", "one"], ["cut"]))
        weights.update(zero=np.array([0], np.int64), four=np.array([4], np.int64), one=np.array([1], np.int64))
        nodes.append(helper.make_node("MatMul", ["r", "w2"], ["logits_raw"]))
        nodes.append(helper.make_node("Add", ["logits_raw", "cut"], ["logits"]))
    else:
        nodes.append(helper.make_node("MatMul", [last, "w2"], ["logits"]))
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
                              [numpy_helper.from_array(w, name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def reference(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the ``good`` model of ``seed`` answers, computed in numpy."""
    weights = _weights(seed)
    return np.maximum(x @ weights["w1"], 0) @ weights["w2"]


def make_build(folder: Path, version: str, kind: str = "good", seed: int = 0) -> Path:
    """A build folder with one passed ONNX artifact for the Pi and a manifest recording the interface."""
    target = folder / TARGET
    target.mkdir(parents=True, exist_ok=True)
    relpath = f"{TARGET}/{MODEL}.fp32.onnx"
    onnx_model(folder / relpath, kind, seed)
    (folder / (relpath + ".report.json")).write_bytes(canonical_bytes({"artifact": relpath, "passed": True}))
    artifact = {
        "target": TARGET, "format": "onnx", "precision": "fp32", "io": "float", "variant": "fp32", "path": relpath,
        "report": relpath + ".report.json", "sha256": sha256_file(folder / relpath),
        "size_bytes": size_bytes(folder / relpath), "runtime": "onnxruntime", "min_runtime_version": "1.18.0",
        "metrics": {"cosine": 1.0}, "budgets": {}, "checks": [], "passed": True,
    }
    manifest = {
        "schema_version": 1, "created_at": "2026-11-26T08:00:00Z",
        "model": {"name": MODEL, "version": version, "source": "onnx.helper", "source_sha256": "ab" * 32,
                  "inputs": [{"name": "x", "shape": [None, FEATURES], "dtype": "float32", "range": [-1.0, 1.0]}],
                  "outputs": ["logits"]},
        "toolkit": {"edgekit": "0.1.0", "python": "3.11.7", "versions": {}},
        "targets": [{"name": TARGET, "profile_sha256": "ab" * 32, "status": "passed", "messages": []}],
        "artifacts": [artifact],
    }
    write_manifest(folder, manifest)
    return folder


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    mine = generate_keypair(tmp_path_factory.mktemp("keys"), "release")
    return Keys(mine.private, mine.public)


def bundle(build: Path, version: str, keys: Keys, out: Path) -> Path:
    outcome = run("bundle", build, "--key", keys.private, "--version", version, "-o", out, "--target", TARGET,
                  "--json")
    assert outcome.exit_code == 0, outcome.stderr
    return Path(outcome.json()["bundles"][0]["path"])


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> dict[str, Path]:
    """Signed Pi bundles: 1.0.0 and 1.1.0 good (different weights), 1.2.0 failing, 1.3.0 slow."""
    root = tmp_path_factory.mktemp("runtime-bundles")
    made = {}
    for version, kind, seed in (("1.0.0", "good", 0), ("1.1.0", "good", 1), ("1.2.0", "failing", 0),
                                ("1.3.0", "slow", 0)):
        made[version] = bundle(make_build(root / f"build-{version}", version, kind, seed), version, keys, root / "out")
    return made


def install(bundle_path: Path, store: Path, keys: Keys, candidate: Any = None) -> Any:
    from edgekit.release.signing import load_public_key

    return install_bundle(bundle_path, store, [load_public_key(keys.public)], target=TARGET, candidate=candidate)


def samples(count: int, seed: int = 0) -> np.ndarray:
    """``count`` inputs inside the calibrated range."""
    return np.random.default_rng(seed).uniform(-1, 1, (count, FEATURES)).astype(np.float32)


@pytest.fixture()
def rt() -> ModuleType:
    """This module: run, make_build, install, samples, reference and friends."""
    return sys.modules[__name__]
