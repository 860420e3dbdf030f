"""Tiny real models, data and cached builds shared by the TFLite backend tests.

Builds are cached per (model, precision, io, device kind) for the whole test
session, so the build, runtime, inspect and micro tests convert each model
once. Everything is real: litert-torch, ai-edge-quantizer, LiteRT, TFLite Micro.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.artifact import Artifact
from edgekit.backends import ExportJob, TensorSpec
from edgekit.config import ArtifactRequest, Device, TargetProfile

torch.set_num_threads(1)  # the test machine's cores are shared

_ROOT = Path(tempfile.mkdtemp(prefix="edgekit-tflite-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool-Linear on (1, 8, 8) inputs, 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TwoInput(nn.Module):
    """int64 ``input_ids`` + ``attention_mask`` -> (logits, pooled): two inputs, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = attention_mask.unsqueeze(-1).float()
        h = torch.relu(self.proj(self.embed(input_ids))) * mask
        pooled = h.sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled), pooled


class Median(nn.Module):
    """Uses aten.median, which litert-torch has no lowering for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.median(dim=1).values


class WithMedian(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(12, 8), Median())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class GeluMLP(nn.Module):
    """Converts to TFLite with a GELU op, which TFLite Micro has no kernel for."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WithSign(nn.Module):
    """Converts to TFLite with a SIGN op: LiteRT runs it, TFLite Micro has no kernel and no rewrite exists."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.sign(self.fc1(x)))


class TinyEncoder(nn.Module):
    """Transformer-style encoder on (N, 4, 6) token features -> 3 scores.

    Linear embedding + positions, LayerNorm, hand-written attention (matmul,
    softmax), a GELU MLP (``nn.GELU``) and a functional ``F.gelu`` before the
    pool: both GELU forms TFLite Micro needs rewritten.
    """

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.pos = nn.Parameter(0.1 * torch.randn(1, 4, 16))
        self.norm1 = nn.LayerNorm(16)
        self.q, self.k, self.v, self.out = (nn.Linear(16, 16) for _ in range(4))
        self.norm2 = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos
        x = self.norm1(h)
        attention = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) * 0.25, dim=-1)
        h = h + self.out(attention @ self.v(x))
        h = h + self.mlp(self.norm2(h))
        return self.head(nn.functional.gelu(h).mean(dim=1))


def cnn_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Structured images: the class is the bright quadrant, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n)
    x = rng.normal(0.0, 0.35, size=(n, 1, 8, 8)).astype(np.float32)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, 0, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] += 1.0
    return x, y.astype(np.int64)


@functools.cache
def trained_cnn() -> SmallCNN:
    """SmallCNN trained for a few hundred steps on ``cnn_data`` (over 95% accurate), in eval mode."""
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = cnn_data(1024, seed=0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(150):
        idx = torch.randint(0, len(xt), (64,))
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@functools.cache
def seeded(model_name: str) -> nn.Module:
    torch.manual_seed(1)
    models = {"mlp": MLP, "two": TwoInput, "median": WithMedian, "gelu": GeluMLP, "tinyformer": TinyEncoder,
              "sign": WithSign}
    return models[model_name]().eval()


@dataclass(frozen=True)
class Case:
    """A model with its interface, example inputs, calibration and held-out test data."""

    model: nn.Module
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    calibration: dict[str, np.ndarray]
    test: dict[str, np.ndarray]

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(self.test[s.name][:2]) for s in self.inputs)

    def reference(self, feeds: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        feeds = feeds or self.test
        with torch.no_grad():
            out = self.model(*[torch.from_numpy(feeds[s.name]) for s in self.inputs])
        out = out if isinstance(out, tuple) else (out,)
        return [o.numpy() for o in out]


@functools.cache
def case(name: str) -> Case:
    rng = np.random.default_rng(3)
    if name == "cnn":
        calib, _ = cnn_data(128, seed=1)
        test, _ = cnn_data(200, seed=2)
        return Case(trained_cnn(), (TensorSpec("image", (None, 1, 8, 8), "float32"),), ("logits",), {"image": calib}, {"image": test})
    if name == "two":
        ids = rng.integers(0, 30, size=(96, 7), dtype=np.int64)
        lengths = rng.integers(2, 8, size=96)
        mask = (np.arange(7)[None, :] < lengths[:, None]).astype(np.int64)
        specs = (TensorSpec("input_ids", (None, 7), "int64"), TensorSpec("attention_mask", (None, 7), "int64"))
        return Case(
            seeded("two"),
            specs,
            ("logits", "pooled"),
            {"input_ids": ids[:64], "attention_mask": mask[:64]},
            {"input_ids": ids[64:], "attention_mask": mask[64:]},
        )
    if name == "tinyformer":
        tokens = rng.normal(size=(160, 4, 6)).astype(np.float32)
        spec = (TensorSpec("tokens", (None, 4, 6), "float32"),)
        return Case(seeded(name), spec, ("scores",), {"tokens": tokens[:96]}, {"tokens": tokens[96:]})
    x = rng.normal(size=(160, 12)).astype(np.float32)
    return Case(seeded(name), (TensorSpec("features", (None, 12), "float32"),), ("scores",), {"features": x[:96]}, {"features": x[96:]})


def profile(kind: str = "sbc") -> TargetProfile:
    if kind == "microcontroller":
        device = Device(kind="microcontroller", arch="cortex-m4", cores=1, ram_mb=0.25, flash_mb=1.0)
        return TargetProfile(
            name="test-mcu",
            description="test microcontroller",
            device=device,
            artifacts=[ArtifactRequest(format="tflite", precision="int8", io="int8")],
        )
    device = Device(kind=kind, arch="aarch64", cores=4, ram_mb=4096)
    return TargetProfile(
        name="test-sbc", description="test board", device=device, artifacts=[ArtifactRequest(format="tflite", precision="fp32")]
    )


def job(name: str, precision: str, io: str = "float", kind: str = "sbc", workdir: Path | None = None) -> ExportJob:
    c = case(name)
    folder = workdir or Path(tempfile.mkdtemp(dir=_ROOT, prefix=f"{name}-{precision}-"))
    return ExportJob(
        model=c.model,
        example_inputs=c.example_inputs(),
        inputs=c.inputs,
        output_names=c.output_names,
        request=ArtifactRequest(format="tflite", precision=precision, io=io),
        profile=profile(kind),
        calibration=c.calibration,
        workdir=folder,
        stem=name,
    )


@functools.cache
def built(name: str, precision: str, io: str = "float", kind: str = "sbc") -> tuple[Artifact, ...]:
    """Candidates of one build, cached for the session."""
    from edgekit.backends.tflite.build import build

    return tuple(build(job(name, precision, io, kind)))


def by_variant(artifacts: tuple[Artifact, ...]) -> dict[str, Artifact]:
    return {a.variant: a for a in artifacts}


def run(artifact: Artifact | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from edgekit.backends.tflite.runtime import open_session

    path = artifact.path if isinstance(artifact, Artifact) else artifact
    with open_session(path) as session:
        return session.run(feeds)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(-1) == b.argmax(-1)))


def summary(artifact: Artifact) -> dict[str, Any]:
    return {"variant": artifact.variant, "config": artifact.config, "details": artifact.details}


class OutlierMLP(nn.Module):
    """An activation with one huge channel (an "outlier feature"), taken out again before the head.

    Static int8 quantizes that tensor per tensor: its step (~16) rounds every
    ordinary channel (|x| < 1) to zero, so the output is ruined, while keeping
    the outlier tensor float restores it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 32)
        self.outlier = nn.Linear(32, 32)  # identity weights plus the outlier offset, so the tensor has a module
        with torch.no_grad():
            self.outlier.weight.copy_(torch.eye(32))
            self.outlier.bias.zero_()
            self.outlier.bias[0] = 2000.0
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.outlier(torch.tanh(self.fc1(x)))
        return self.fc2(h - self.outlier.bias)


class DepthwiseOnly(nn.Module):
    """Weights only in a depthwise conv, which ai-edge-quantizer's int4 recipes never quantize."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(x).mean(dim=(2, 3))


class TinyGRU(nn.Module):
    """A 2-layer GRU over (N, 6, 5) sequences -> 3 scores."""

    def __init__(self, cell: str = "GRU") -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(5, 24, num_layers=2, batch_first=True)
        self.fc = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def judged_job(model: nn.Module, inputs: tuple[TensorSpec, ...], calibration: dict[str, np.ndarray], precision: str,
               fidelity: Any, output_names: tuple[str, ...] = ("scores",), fixed_batch: int | None = None) -> ExportJob:
    """A job with a fidelity bar and the FP32 reference on the calibration data (as the pipeline makes it)."""
    from edgekit.batching import run_in_chunks

    if not isinstance(model, torch.fx.GraphModule):  # a torch.export module refuses eval(); it is already inference-only
        model = model.eval()

    def forward(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = model(*[torch.from_numpy(feeds[s.name]) for s in inputs])
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    feeds = {s.name: calibration[s.name] for s in inputs}
    reference = tuple(run_in_chunks(forward, feeds, fixed_batch) if fixed_batch else forward(feeds))
    batch = fixed_batch or 2
    return ExportJob(
        model=model,
        example_inputs=tuple(torch.from_numpy(calibration[s.name][:batch]) for s in inputs),
        inputs=inputs,
        output_names=output_names,
        request=ArtifactRequest(format="tflite", precision=precision),
        profile=profile(),
        calibration=calibration,
        workdir=Path(tempfile.mkdtemp(dir=_ROOT, prefix=f"judged-{precision}-")),
        stem="judged",
        reference=reference,
        fidelity=fidelity,
        fixed_batch=fixed_batch,
    )
