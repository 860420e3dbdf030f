"""Shared pieces of the Core ML backend tests: MIL programs saved as packages, sample models, cached builds.

Programs are built with coremltools' MIL builder and saved through ct.convert
with an empty pass pipeline, so every op written in a test reaches the saved
package unchanged (no constant folding or fusion) and the emulator reads it
from disk exactly as it would read a converted model.

Builds of the real sample models are cached per (model, precision, target,
options) for the whole session, so build, runtime and inspect tests convert
each model once.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "sample_models"
_ROOT = Path(tempfile.mkdtemp(prefix="edgekit-coreml-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)


def save_program(program: Any, path: Path, target: str = "iOS18", fp16: bool = False) -> Path:
    """Convert a MIL ``program`` to an ML Program and save it at ``path`` (.mlpackage)."""
    import coremltools as ct

    model = ct.convert(
        program,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, target),
        compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
        pass_pipeline=ct.PassPipeline.EMPTY,
        skip_model_load=True,
    )
    model.save(str(path))
    return path


_CALIBRATION: dict[str, dict[str, np.ndarray]] = {}
CALIBRATION_SIZE = 256


@dataclass(frozen=True)
class Sample:
    """A model in eval mode and held-out data: inputs by name, labels (or None)."""

    module: Any
    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None
    outputs: tuple[str, ...]


_BRANCHY = '''
import torch
from torch import nn


class Branchy(nn.Module):
    """A data-dependent branch: torch.export refuses it, jit.trace records the branch taken."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(torch.relu(x))
        return self.fc(x)


class FixedBatch(nn.Module):
    """Slices with batch arithmetic: torch.export cannot keep the batch dynamic, so it converts at batch 1."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(x)[: x.shape[0] // 2 * 2 + x.shape[0] % 2]


class Tokens(nn.Module):
    """int64 ids + mask, two outputs: (logits, pooled)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.proj = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        h = self.norm(torch.nn.functional.gelu(self.proj(self.embed(input_ids)))) * mask
        pooled = h.sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(pooled), pooled


class MaskBuilder(nn.Module):
    """Builds an additive attention mask the way Hugging Face models do: new_ones, & and where with scalars."""

    def forward(self, ids, mask):
        keep = mask.bool()[:, None, :] & mask.bool()[:, :, None]
        ones = ids.new_ones(ids.shape[-1]).to(torch.float32)
        return torch.where(keep, 0.0, -1e4) * ones


class NewOnes(nn.Module):
    """coremltools 9.0 converts none of new_ones, bool & and where(cond, scalar, scalar) without rewrites."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.masks = MaskBuilder()
        self.head = nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        h = self.embed(input_ids)
        scores = (h @ h.transpose(1, 2)) / 4.0 + self.masks(input_ids, attention_mask)
        return self.head((scores.softmax(-1) @ h).mean(1))


class Bessel(nn.Module):
    def forward(self, x):
        return torch.special.bessel_j0(x)


class Unsupported(nn.Module):
    """An op no route converts (Bessel functions have no Core ML converter), inside a named submodule."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.block = nn.Sequential(nn.ReLU(), Bessel())

    def forward(self, x):
        return self.block(self.fc(x))


class FloatMinMask(nn.Module):
    """Hugging Face's additive mask, (1 - mask) * finfo(float32).min: -inf once cast to FP16."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        h = self.embed(input_ids)
        bias = (1.0 - attention_mask[:, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        scores = (h @ h.transpose(1, 2)) / 4.0 + bias
        return self.head((scores.softmax(-1) @ h).mean(1))


class Outliers(nn.Module):
    """fc2 has one large weight per row: int4 blocks scaled to it zero the rest, so fc2 must stay wider."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 128)
        self.mid = nn.Linear(128, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 10)
        with torch.no_grad():
            self.fc2.weight[torch.arange(64), torch.arange(64)] = 1.5

    def forward(self, x):
        h = torch.relu(self.mid(torch.relu(self.fc1(x))))
        return self.fc3(torch.relu(self.fc2(h)))
'''


INLINE = {"branchy": "Branchy", "fixed_batch": "FixedBatch", "tiny_tokens": "Tokens", "new_ones": "NewOnes",
          "unsupported": "Unsupported", "outliers": "Outliers", "float_min_mask": "FloatMinMask"}


def _inline_module() -> Any:
    import importlib.util

    path = _ROOT / "inline_models.py"
    if not path.exists():
        path.write_text(_BRANCHY)
    spec = importlib.util.spec_from_file_location("coreml_inline_models", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@functools.lru_cache(maxsize=None)
def sample(name: str) -> Sample:
    """A real sample model (trained weights when the repo has them, seeded init otherwise) with its holdout data."""
    import torch

    from edgekit.model import load_factory

    torch.manual_seed(0)
    if name in INLINE:
        module = getattr(_inline_module(), INLINE[name])().eval()
        rng = np.random.default_rng(0)
        if name in ("branchy", "fixed_batch", "unsupported", "outliers"):
            x = np.abs(rng.standard_normal((40, 16)).astype(np.float32))  # positive sums: the traced branch
            return Sample(module, {"x": x}, None, ("logits",))
        ids = rng.integers(0, 20, (40, 12)).astype(np.int64)
        mask = (np.arange(12)[None, :] < rng.integers(3, 13, 40)[:, None]).astype(np.int64)
        outputs = ("logits", "pooled") if name == "tiny_tokens" else ("logits",)
        return Sample(module, {"input_ids": ids, "attention_mask": mask}, None, outputs)
    weights = SAMPLES / name / "weights.safetensors"
    loaded = load_factory(f"{SAMPLES / name / 'model.py'}:create", weights if weights.exists() else None, REPO)
    data = {"mobilenet": "digits32", "tokens": "tokens"}.get(name, "digits")
    with np.load(SAMPLES / "data" / f"{data}_holdout.npz") as archive:
        feeds = {n: archive[n] for n in loaded.input_names}
        labels = archive["y"] if weights.exists() else None
    # Like the pipeline, calibrate on a split of the data given to the build (its default calibration_size);
    # the samples after it are never seen by calibration (``CALIBRATION_SIZE`` lets tests score them apart).
    _CALIBRATION[name] = {n: v[:CALIBRATION_SIZE] for n, v in feeds.items()}
    outputs = ("logits", "embedding") if name == "tokens" else ("logits",)
    return Sample(loaded.module.eval(), feeds, labels, outputs)


def reference(name: str, feeds: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    import torch

    s = sample(name)
    feeds = feeds or s.feeds
    with torch.no_grad():
        out = s.module(*[torch.from_numpy(v) for v in feeds.values()])
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def job(name: str, precision: str, target: str = "iphone-ios17", options: dict[str, Any] | None = None,
        workdir: Path | None = None) -> Any:
    import copy

    import torch

    from edgekit.backends import ExportJob, TensorSpec
    from edgekit.config import ArtifactRequest, load_profile

    from edgekit.fidelity import FidelityTarget, has_classes

    s = sample(name)
    key = json.dumps([name, precision, target, options or {}], sort_keys=True)
    folder = workdir or (_ROOT / f"job-{abs(hash(key))}")
    folder.mkdir(parents=True, exist_ok=True)
    calibration = _CALIBRATION.get(name, {k: v[:64] for k, v in s.feeds.items()})
    profile = load_profile(target)
    # As the pipeline does: the FP32 outputs on the calibration split and the profile's bar for the precision.
    calibration_reference = tuple(reference(name, calibration))
    bar = profile.budgets_for(precision) if precision in ("fp32", "fp16", "int8", "int4") else None
    fidelity = FidelityTarget() if bar is None else FidelityTarget(
        bar.min_cosine, bar.min_top1_agreement if has_classes(list(calibration_reference)) else None, bar.min_sqnr_db)
    return ExportJob(
        model=copy.deepcopy(s.module),
        example_inputs=tuple(torch.from_numpy(v[:2]) for v in s.feeds.values()),
        inputs=tuple(TensorSpec(n, (None, *v.shape[1:]), str(v.dtype)) for n, v in s.feeds.items()),
        output_names=s.outputs,
        request=ArtifactRequest(format="coreml", precision=precision, options=options or {}),
        profile=profile,
        calibration=calibration,
        workdir=folder,
        stem=name,
        reference=calibration_reference,
        fidelity=fidelity,
    )


@functools.lru_cache(maxsize=None)
def _built(name: str, precision: str, target: str, options_json: str) -> tuple[Any, ...]:
    from edgekit.backends.coreml import build

    return tuple(build.build(job(name, precision, target, json.loads(options_json))))


def built(name: str, precision: str, target: str = "iphone-ios17", options: dict[str, Any] | None = None) -> list[Any]:
    """The candidates of one request, built once per test session."""
    return list(_built(name, precision, target, json.dumps(options or {}, sort_keys=True)))


def by_variant(artifacts: list[Any]) -> dict[str, Any]:
    return {a.variant: a for a in artifacts}


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())
