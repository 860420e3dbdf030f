"""The benchmark zoo: real-size models with real data, for measuring edgekit as users meet it.

    from benchmarks.zoo import MODELS, ensure
    paths = ensure("mobilenet_v2")   # weights + data + edgekit.toml in benchmarks/zoo/.cache (made once)
    edgekit build <paths.config> -t raspberry-pi-4

or from the shell: ``python -m benchmarks.zoo.prepare [NAME ...]`` (prints the
config paths). See README.md in this folder for each model, its data and what
is real. Everything is generated from files on disk, seeded, and cached;
nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.zoo.prepare import Prepared

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
ARCHITECTURES = HERE / "architectures.py"


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: the factory in architectures.py, its data file, and how to judge its outputs."""

    name: str
    factory: str
    data: str  # data file stem in the cache: images224, detection224, digit_rows, minilm_text
    task: str  # "classification" (labelled, top-1 is meaningful) | "embedding" (unlabelled)
    description: str
    outputs: tuple[str, ...] | None = None
    fixed_batch_pt2: bool = False  # shipped to edgekit as a torch.export program of batch 1, not a factory


MODELS: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("mobilenet_v2", "mobilenet_v2", "images224", "classification",
             "MobileNetV2 1.0, 224x224 (torchvision layout), trained end to end on real photo crops"),
    ZooModel("resnet18", "resnet18", "images224", "classification",
             "ResNet-18, 224x224 (torchvision layout), BN statistics from real photos, linear-probe head"),
    ZooModel("vit_tiny", "vit_tiny", "images224", "classification",
             "ViT-Tiny/16 (dim 192, 12 layers), 224x224, random init, linear-probe head"),
    ZooModel("detector", "detector", "detection224", "embedding",
             "SSDLite-style MobileNetV2 detector: scores (N, 245, 11) and boxes (N, 245, 4), heads fitted on real boxes",
             outputs=("scores", "boxes")),
    ZooModel("gru", "gru", "digit_rows", "classification", "2-layer GRU (hidden 256) over digit rows, trained"),
    ZooModel("lstm", "lstm", "digit_rows", "classification", "2-layer LSTM (hidden 256) over digit rows, trained"),
    ZooModel("minilm", "minilm", "minilm_text", "embedding",
             "all-MiniLM-L6-v2, real pretrained weights (22.6M), input_ids + attention_mask, seq 64"),
    ZooModel("mobilenet_v2_pt2", "mobilenet_v2", "images224", "classification",
             "the mobilenet_v2 weights as a fixed-batch torch.export program (batch 1, no dynamic_shapes)",
             fixed_batch_pt2=True),
)}


def ensure(name: str, force: bool = False) -> Prepared:
    """Make (or reuse) the weights, data and edgekit.toml of zoo model ``name``; see ``prepare.prepare``."""
    from benchmarks.zoo.prepare import prepare

    return prepare(name, force)
