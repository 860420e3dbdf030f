"""Fixtures for the compression tests: tiny models written to disk and small slices of the digits data.

The models are small enough that a few epochs take a fraction of a second on
one thread; the data is real (the digits sample), so accuracy means something.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "sample_models" / "data"

MODELS = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class TinyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                nn.MaxPool2d(2, stride=2),
            )
            self.classifier = nn.Linear(32 * 4 * 4, 10)

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))


    class Block(nn.Module):
        """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual add."""

        def __init__(self, channels, hidden):
            super().__init__()
            self.block = nn.Sequential(
                nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
                nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
                nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels),
            )

        def forward(self, x):
            return x + self.block(x)


    class TinyMobile(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
            self.blocks = nn.Sequential(Block(16, 64), Block(16, 64))
            self.last = nn.Sequential(nn.Conv2d(16, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
            self.classifier = nn.Linear(64, 10)

        def forward(self, x):
            return self.classifier(torch.mean(self.last(self.blocks(self.stem(x))), dim=(2, 3)))


    class Attention(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads = heads
            self.head_dim = dim // heads
            self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

        def split(self, x):
            return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

        def forward(self, x):
            q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
            a = torch.softmax(q @ k.transpose(-2, -1) * 0.25, dim=-1) @ v
            return self.out(a.transpose(1, 2).flatten(2))


    class TinyAttention(nn.Module):
        """Rows of the 8x8 image as 8 tokens; 4 heads of 8 dims."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(8, 32)
            self.norm = nn.LayerNorm(32)
            self.attn = Attention(32, 4)
            self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            h = self.embed(x.flatten(1, 2))
            h = h + self.attn(self.norm(h))
            h = h + self.mlp(h)
            return self.head(h.mean(dim=1))


    class TinyEncoder(nn.Module):
        """Pixels as 64 tokens (embedding + positions), one attention block; returns (logits, pooled stream).

        The pooled residual stream is an output, so its width must survive pruning.
        """

        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(17, 32)
            self.pos = nn.Parameter(torch.zeros(1, 64, 32))
            self.norm = nn.LayerNorm(32)
            self.attn = Attention(32, 4)
            self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
            self.final = nn.LayerNorm(32)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            h = self.embed((x.flatten(1) * 16).round().long()) + self.pos
            h = h + self.attn(self.norm(h))
            pooled = self.final(h + self.mlp(h)).mean(dim=1)
            return self.head(pooled), pooled


    class NoLayers(nn.Module):
        """Only a scale parameter: nothing to prune."""

        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x.flatten(1)[:, :10] * self.scale


    class WrongInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(100, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))


    class WrongOutput(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 7)

        def forward(self, x):
            return self.fc(x.flatten(1))


    class SmallCNN(nn.Module):
        """A factory student for TinyCNN: fewer channels, same interface."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=2))
            self.classifier = nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))


    def tiny_cnn():
        return TinyCNN()


    def tiny_mobile():
        return TinyMobile()


    def tiny_attention():
        return TinyAttention()


    def tiny_encoder():
        return TinyEncoder()


    def no_layers():
        return NoLayers()


    def wrong_input():
        return WrongInput()


    def wrong_output():
        return WrongOutput()


    def small_cnn():
        return SmallCNN()
    '''
)


@dataclass(frozen=True)
class Workspace:
    """models.py (factories by name), the digits slices and a trained TinyCNN's weights."""

    folder: Path
    models: Path
    train: Path
    holdout: Path
    unlabelled: Path
    cnn_weights: Path

    def factory(self, name: str) -> str:
        return f"{self.models}:{name}"


def _train_tiny_cnn(models: Path, train: Path, weights: Path) -> None:
    """A teacher worth distilling: TinyCNN trained for a few epochs on the slice."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("compress_fixture_models", models)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = module.tiny_cnn()
    with np.load(train) as data:
        x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        for i in range(0, len(x), 32):
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    folder = tmp_path_factory.mktemp("compress")
    models = folder / "models.py"
    models.write_text(MODELS)
    with np.load(DIGITS / "digits_train.npz") as data:
        x, y = data["x"][:320], data["y"][:320]
    with np.load(DIGITS / "digits_holdout.npz") as data:
        hx, hy = data["x"][:200], data["y"][:200]
    train, holdout, unlabelled = folder / "train.npz", folder / "holdout.npz", folder / "unlabelled.npz"
    np.savez(train, x=x, y=y)
    np.savez(holdout, x=hx, y=hy)
    np.savez(unlabelled, x=x)
    weights = folder / "tiny_cnn.safetensors"
    _train_tiny_cnn(models, train, weights)
    return Workspace(folder, models, train, holdout, unlabelled, weights)


class RecordingProgress:
    """A Progress that records what training reported (and can interrupt it)."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.starts: list[str] = []
        self.messages: list[str] = []
        self.interrupt_after = interrupt_after

    def start(self, description: str, total: int) -> None:
        self.starts.append(description)

    def advance(self, message: str) -> None:
        self.messages.append(message)
        if self.interrupt_after is not None and len(self.messages) >= self.interrupt_after:
            raise KeyboardInterrupt


@pytest.fixture()
def recording() -> type[RecordingProgress]:
    return RecordingProgress
