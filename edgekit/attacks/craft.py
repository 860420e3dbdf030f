"""Craft the attack suite on the FP32 torch model: FGSM and PGD at each eps, corruptions, members. Imports torch.

Perturbations apply to float inputs only (an eps-ball around token ids means
nothing) and stay inside the box the calibration data spans, per input: the
device runtime refuses inputs far outside it, so an attack outside it would
measure nothing a device sees. The loss is the cross-entropy of the first
output against the targets (labels, or the FP32 top class without labels).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgekit.attacks.assess import observe
from edgekit.attacks.suite import (
    CONTRAST,
    DEFAULT_EPS_FRACTIONS,
    AttackSet,
    AttackSuite,
)
from edgekit.data import Dataset, Split
from edgekit.model import LoadedModel, flatten_outputs, run_reference, to_torch

if TYPE_CHECKING:
    from edgekit.config import AttacksSection

PGD_STEP = 2.5  # PGD's step is 2.5 * eps / steps, so the walk can cross the ball and come back (Madry et al.)
CHUNK = 64
# Crafting costs samples x eps x (PGD steps + 1) gradient passes of about 3x a forward pass each. A larger model
# gets fewer samples, so that crafting stays near this many multiply-accumulates: measured 6.3 GMAC/s on one
# thread of a busy 2-core host (the MobileNet sample, 24.7 MMACs: 256 samples took 99 s), so about 16 s there;
# that sample gets 40 samples, a 224x224 MobileNetV2 (0.3 GMACs) the minimum. The samples used are recorded,
# and the intervals widen to match.
CRAFT_MAC_BUDGET = 1e11
MIN_SAMPLES = 32


def attacked_count(config: AttacksSection, available: int, macs: int | None) -> int:
    """How many evaluation samples to attack: ``config.samples``, fewer for a costly model, at most ``available``."""
    wanted = config.samples
    if macs:
        eps_count = len(config.eps) if config.eps else len(DEFAULT_EPS_FRACTIONS)
        per_sample = 3 * macs * eps_count * (config.pgd_steps + 1)
        wanted = min(wanted, max(MIN_SAMPLES, int(CRAFT_MAC_BUDGET // per_sample)))
    return min(wanted, available)


def torch_runner(model: LoadedModel):  # noqa: ANN201 - an attacks.assess.Runner
    """A runner over the FP32 torch model (``run_reference``, padded to a fixed batch where needed)."""
    return lambda inputs: run_reference(model, Dataset(inputs, None))[0]


def _box(calibration: Dataset, names: list[str]) -> dict[str, tuple[float, float]]:
    return {name: (float(calibration.inputs[name].min()), float(calibration.inputs[name].max())) for name in names}


def _loss(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    rows = output.reshape(len(output), -1).float()
    if bool((rows >= 0).all()) and bool(torch.allclose(rows.sum(dim=1), torch.ones(len(rows)), atol=1e-3)):
        return torch.nn.functional.nll_loss(torch.log(rows.clamp_min(1e-30)), targets, reduction="sum")  # probabilities
    return torch.nn.functional.cross_entropy(rows, targets, reduction="sum")


def _gradient_signs(model: LoadedModel, feeds: list[torch.Tensor], floats: list[int],
                    targets: torch.Tensor) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_(i in floats) for i, t in enumerate(feeds)]
    with torch.enable_grad():
        outputs, _ = flatten_outputs(model.module(*leaves))
        grads = torch.autograd.grad(_loss(outputs[0], targets), [leaves[i] for i in floats])
    return [g.sign() for g in grads]


def _project(x: torch.Tensor, origin: torch.Tensor, eps: float, box: tuple[float, float]) -> torch.Tensor:
    return torch.clamp(torch.minimum(torch.maximum(x, origin - eps), origin + eps), box[0], box[1]).detach()


def _chunk_attacks(model: LoadedModel, feeds: list[torch.Tensor], floats: list[int], boxes: list[tuple[float, float]],
                   targets: torch.Tensor, eps: float, steps: int, generator: torch.Generator) -> dict[str, list[torch.Tensor]]:
    """FGSM and PGD (random start) of one chunk at one eps."""
    signs = _gradient_signs(model, feeds, floats, targets)
    fgsm = list(feeds)
    for slot, (i, box) in enumerate(zip(floats, boxes, strict=True)):
        fgsm[i] = torch.clamp(feeds[i] + eps * signs[slot], box[0], box[1])
    pgd = list(feeds)
    for i, box in zip(floats, boxes, strict=True):
        start = (torch.rand(feeds[i].shape, generator=generator) * 2 - 1) * eps
        pgd[i] = _project(feeds[i] + start, feeds[i], eps, box)
    for _ in range(steps):
        signs = _gradient_signs(model, pgd, floats, targets)
        for slot, (i, box) in enumerate(zip(floats, boxes, strict=True)):
            pgd[i] = _project(pgd[i] + PGD_STEP * eps / steps * signs[slot], feeds[i], eps, box)
    return {"fgsm": fgsm, "pgd": pgd}


def adversarial_sets(model: LoadedModel, clean: Dataset, targets: np.ndarray, boxes: dict[str, tuple[float, float]],
                     eps_values: tuple[float, ...], steps: int, seed: int) -> list[AttackSet]:
    """FGSM and PGD copies of ``clean`` at each eps, crafted in chunks (a fixed-batch model's own batch)."""
    from edgekit.batching import pad_to

    names = list(model.input_names)
    floats = [names.index(n) for n in boxes]
    chunk = model.fixed_batch or CHUNK
    generator = torch.Generator().manual_seed(seed)
    parts: dict[tuple[str, float], list[list[np.ndarray]]] = {}
    for start in range(0, len(clean), chunk):
        batch, real = pad_to({n: v[start:start + chunk] for n, v in clean.inputs.items()}, chunk) \
            if model.fixed_batch else ({n: v[start:start + chunk] for n, v in clean.inputs.items()}, None)
        feeds = list(to_torch(batch, model.input_names))
        wanted = targets[start:start + chunk]
        padded = torch.from_numpy(np.pad(wanted, (0, len(feeds[0]) - len(wanted))).astype(np.int64))
        for eps in eps_values:
            made = _chunk_attacks(model, feeds, floats, [boxes[n] for n in boxes], padded, eps, steps, generator)
            for kind, tensors in made.items():
                parts.setdefault((kind, eps), []).append([t.detach().numpy()[:len(wanted)] for t in tensors])
    return [AttackSet(kind, eps, {n: np.concatenate([p[i] for p in pieces]).astype(clean.inputs[n].dtype)
                                  for i, n in enumerate(names)})
            for (kind, eps), pieces in sorted(parts.items(), key=lambda item: (item[0][1], item[0][0]))]


def corruption_sets(clean: Dataset, boxes: dict[str, tuple[float, float]], eps: float, seed: int) -> list[AttackSet]:
    """Gaussian noise of standard deviation ``eps``, and contrast halved around each sample's mean (float inputs)."""
    rng = np.random.default_rng(seed)
    noise, contrast = dict(clean.inputs), dict(clean.inputs)
    for name, (low, high) in boxes.items():
        x = clean.inputs[name].astype(np.float32)
        noise[name] = np.clip(x + rng.normal(0, eps, x.shape), low, high).astype(x.dtype)
        mean = x.reshape(len(x), -1).mean(axis=1).reshape((len(x),) + (1,) * (x.ndim - 1))
        contrast[name] = np.clip(mean + CONTRAST * (x - mean), low, high).astype(x.dtype)
    return [AttackSet("noise", eps, noise), AttackSet("contrast", eps, contrast)]


def _robustness_blocker(model: LoadedModel, clean: Dataset, classes: bool) -> str | None:
    if not classes:
        return ("the first output is not known to be class scores (no labels, and [data] task is not "
                "'classification'), so there is no prediction to flip")
    if not any(np.issubdtype(v.dtype, np.floating) for v in clean.inputs.values()):
        return "the model has no float inputs (an eps-ball around integer inputs such as token ids means nothing)"
    return None


def _membership_blocker(train: Dataset | None, evaluation: Dataset, classes: bool) -> str | None:
    if train is None:
        return "no training data: set [data] train to the samples the model was trained on"
    if not classes:
        return "the first output is not known to be class scores, so there is no loss or confidence to threshold"
    if train.sha256 is not None and train.sha256 == evaluation.sha256:
        return "[data] train and [data] path are the same file: there are no held-out samples to compare with"
    return None


def _eps_values(config: AttacksSection, boxes: dict[str, tuple[float, float]]) -> tuple[tuple[float, ...], float]:
    if config.eps is not None:
        eps = tuple(config.eps)
    else:
        span = max(high - low for low, high in boxes.values()) or 1.0
        eps = tuple(float(f"{fraction * span:.4g}") for fraction in DEFAULT_EPS_FRACTIONS)
    return eps, config.judged_eps if config.judged_eps is not None else eps[len(eps) // 2]


def _robustness(model: LoadedModel, clean: Dataset, targets: np.ndarray, calibration: Dataset,
                config: AttacksSection) -> tuple[dict[str, object], str | None]:
    floats = [n for n, v in clean.inputs.items() if np.issubdtype(v.dtype, np.floating)]
    boxes = _box(calibration, floats)
    eps, judged = _eps_values(config, boxes)
    try:
        sets = adversarial_sets(model, clean, targets, boxes, eps, config.pgd_steps, config.seed)
    except Exception as exc:  # a model torch cannot differentiate (integer maths, argmax) is reported, not fatal
        return {}, f"crafting on the FP32 torch model failed: {type(exc).__name__}: {str(exc).strip()[:200]}"
    sets += corruption_sets(clean, boxes, judged, config.seed)
    return {"eps": eps, "judged_eps": judged, "sets": tuple(sets)}, None


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: many small backward passes gain nothing from a pool, and its spinning
    threads made crafting on the CNN sample take 55 s instead of 1 s on a busy 2-core host (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def craft_suite(model: LoadedModel, split: Split, train: Dataset | None, config: AttacksSection,
                classes: bool, macs: int | None = None) -> AttackSuite:
    """The suite every artifact of the build is run on, with the FP32 model's own observation of it.

    ``macs`` (per sample) bounds the number of attacked samples for a costly model (``attacked_count``).
    """
    started = time.perf_counter()
    with _one_thread():
        suite = _craft(model, split, train, config, classes, attacked_count(config, len(split.evaluation), macs))
    return dataclasses.replace(suite, craft_seconds=time.perf_counter() - started)


def _craft(model: LoadedModel, split: Split, train: Dataset | None, config: AttacksSection,
           classes: bool, count: int) -> AttackSuite:
    evaluation = split.evaluation
    rng = np.random.default_rng(config.seed)
    chosen = np.sort(rng.choice(len(evaluation), count, replace=False))
    clean = evaluation.take(chosen)
    reference = run_reference(model, clean)[0][0]
    targets = clean.y if clean.labelled else reference.reshape(len(reference), -1).argmax(axis=1)
    settings = {"pgd_steps": config.pgd_steps, "bootstrap": config.bootstrap, "seed": config.seed}
    suite = AttackSuite(clean, np.asarray(targets, dtype=np.int64), "labels" if clean.labelled else "fp32 top-1",
                        settings=settings)
    blocked = _robustness_blocker(model, clean, classes)
    if blocked is None:
        parts, blocked = _robustness(model, clean, suite.targets, split.calibration, config)
        suite = dataclasses.replace(suite, **parts)  # type: ignore[arg-type]
    suite = dataclasses.replace(suite, robustness_skipped=blocked)
    missing = _membership_blocker(train, evaluation, classes)
    if missing is None:
        assert train is not None
        picked = np.sort(rng.choice(len(train), min(len(clean), len(train)), replace=False))
        suite = dataclasses.replace(suite, members=train.take(picked))
    suite = dataclasses.replace(suite, membership_skipped=missing)
    return dataclasses.replace(suite, fp32=observe(torch_runner(model), suite))
