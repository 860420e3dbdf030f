"""Shared fixtures: tiny real models, real data files and a CLI runner.

Models here are small enough to export and quantize in about a second, so
tests exercise the real converters and runtimes rather than mocks.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import os

import numpy as np
import pytest

# Builds in tests run in the test's process and keep nothing between builds, unless a test asks for a cache or
# an executor: a shared cache would let one test's build answer another's (a converter a test breaks on purpose
# would never run), and a process pool would time candidates under the load of the others.
os.environ["EDGEKIT_NO_CACHE"] = "1"
os.environ["EDGEKIT_EXECUTOR"] = "serial"

TINY_CNN = textwrap.dedent(
    """
    import torch
    from torch import nn


    class TinyCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2, stride=2),
                nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            )
            self.head = nn.Linear(16 * 4 * 4, 10)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))


    def create():
        return TinyCNN()
    """
)

TOKEN_ENCODER = textwrap.dedent(
    """
    import torch
    from torch import nn


    class TokenEncoder(nn.Module):
        '''Two int64 inputs (ids, mask), two outputs (logits, embedding), a -1e9 mask bias.'''

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(20, 16)
            self.q = nn.Linear(16, 16)
            self.k = nn.Linear(16, 16)
            self.v = nn.Linear(16, 16)
            self.norm = nn.LayerNorm(16)
            self.head = nn.Linear(16, 4)

        def forward(self, input_ids, attention_mask):
            h = self.embed(input_ids)
            scores = self.q(h) @ self.k(h).transpose(1, 2) / 4.0
            bias = (1.0 - attention_mask[:, None, :].float()) * -1e9
            h = self.norm(h + torch.softmax(scores + bias, dim=-1) @ self.v(h))
            mask = attention_mask[:, :, None].float()
            pooled = (h * mask).sum(1) / mask.sum(1)
            return self.head(pooled), pooled


    def create():
        return TokenEncoder()
    """
)


@dataclass(frozen=True)
class ModelFiles:
    """A factory module, its weights and a data file, on disk."""

    folder: Path
    factory: str
    weights: Path
    data: Path


def _write_model(folder: Path, source: str, seed: int) -> tuple[Path, Path]:
    import importlib.util

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model_py = folder / "model.py"
    model_py.write_text(source)
    spec = importlib.util.spec_from_file_location(f"fixture_{folder.name}", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    model = module.create().eval()
    weights = folder / "weights.pt"
    torch.save(model.state_dict(), weights)
    return model_py, weights


@pytest.fixture(scope="session")
def tiny_cnn(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """A random-weight CNN on (1, 8, 8) inputs with labelled data (labels from its own argmax).

    Labels equal the FP32 model's predictions, so FP32 accuracy is 1.0 and any
    accuracy drop measured on an artifact is the conversion's doing.
    """
    import torch

    folder = tmp_path_factory.mktemp("tiny_cnn")
    model_py, weights = _write_model(folder, TINY_CNN, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((96, 1, 8, 8), dtype=np.float32)
    import importlib.util

    spec = importlib.util.spec_from_file_location("fixture_tiny_cnn_labels", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.create().eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)
    data = folder / "data.npz"
    np.savez(data, x=x, y=y)
    return ModelFiles(folder, f"{model_py}:create", weights, data)


@pytest.fixture(scope="session")
def token_encoder(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """A two-input (int64 ids + mask), two-output encoder with unlabelled data."""
    folder = tmp_path_factory.mktemp("token_encoder")
    model_py, weights = _write_model(folder, TOKEN_ENCODER, seed=1)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 20, size=(64, 12), dtype=np.int64)
    lengths = rng.integers(4, 13, size=64)
    mask = (np.arange(12)[None, :] < lengths[:, None]).astype(np.int64)
    data = folder / "data.npz"
    np.savez(data, input_ids=ids, attention_mask=mask)
    return ModelFiles(folder, f"{model_py}:create", weights, data)


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``edgekit ARGS`` in-process through the real entry point (exit-code mapping included)."""
    from edgekit.cli import main

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


# The `slow` marker keeps `pytest -m "not slow"` a two-minute inner loop; a test that converts or trains
# without it shows up here, so the marker stays true as tests are added (a report, not a failure: timings vary).
SLOW_UNMARKED_SECONDS = 4.0


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest's hook signature
    unmarked = [
        report for report in terminalreporter.stats.get("passed", [])
        if report.when == "call" and report.duration > SLOW_UNMARKED_SECONDS and "slow" not in report.keywords
    ]
    if unmarked:
        terminalreporter.write_sep("-", f"unmarked tests over {SLOW_UNMARKED_SECONDS:.0f} s: mark them @pytest.mark.slow")
        for report in sorted(unmarked, key=lambda r: -r.duration):
            terminalreporter.write_line(f"{report.duration:6.1f}s {report.nodeid}")


@pytest.fixture()
def manifest_for(tmp_path: Path) -> Callable[..., Path]:
    """``manifest_for(artifact, {target: budgets}, reference_accuracy=1.0)``: a minimal schema-valid build manifest
    listing ``artifact`` (its real sha256 and size) once per target, written into tmp_path."""
    import json

    from edgekit.artifact import sha256_file, size_bytes

    def write(artifact: Path, budgets: dict[str, dict[str, float]], reference_accuracy: float | None = 1.0) -> Path:
        entries = [{"target": target, "format": artifact.suffix.lstrip("."), "precision": "fp32",
                    "path": f"{target}/{artifact.name}", "sha256": sha256_file(artifact),
                    "size_bytes": size_bytes(artifact), "runtime": "r", "min_runtime_version": None, "passed": True,
                    "budgets": limits, "metrics": {"accuracy": 1.0}} for target, limits in budgets.items()]
        manifest = {"schema_version": 1, "created_at": "2026-01-01T00:00:00Z",
                    "model": {"name": "m", "version": "1.0.0"}, "toolkit": {"edgekit": "0.1.0"},
                    "targets": [{"name": t, "status": "passed"} for t in budgets], "artifacts": entries,
                    **({"reference": {"accuracy": reference_accuracy}} if reference_accuracy is not None else {})}
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps(manifest))
        return path

    return write


@pytest.fixture(scope="session")
def write_profile() -> Callable[..., Path]:
    """``write_profile(folder, name, [("onnx", "fp32"), ("tflite", "int8", "int8")], kind=..., budgets=...)``:
    a small target profile on disk, for a device that is not this host (its latency is never judged here)."""

    def write(folder: Path, name: str, artifacts: list[tuple[str, ...]], kind: str = "sbc",
              budgets: dict[str, float] | None = None) -> Path:
        device = ('kind = "microcontroller"\narch = "xtensa"\ncores = 1\nram_mb = 1' if kind == "microcontroller"
                  else f'kind = "{kind}"\narch = "aarch64"\ncores = 4\nram_mb = 1024')
        lines = [f'name = "{name}"', 'description = "a test profile"', "[device]", device]
        for fmt, precision, *io in artifacts:
            lines += ["[[artifacts]]", f'format = "{fmt}"', f'precision = "{precision}"', *(f'io = "{v}"' for v in io)]
        lines += ["[budgets]", *(f"{k} = {v}" for k, v in budgets.items())] if budgets else []
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    return write
