"""The seeded training loop shared by pruning fine-tuning and distillation.

Tensors, not files: callers turn a :class:`edgekit.data.Dataset` into a
:class:`TensorData` once. The loop is AdamW with linear warm-up and cosine
decay, validation after every epoch, and restore-the-best-epoch early
stopping. Hooks let pruning re-apply masks after each optimizer step and
change sparsity at the start of an epoch. Imports torch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekit.compress.config import TrainOptions
from edgekit.data import Dataset
from edgekit.errors import DataError
from edgekit.model import flatten_outputs, to_torch

Inputs = tuple[torch.Tensor, ...]
# loss(model, inputs, labels, progress in [0, 1]) -> scalar loss
LossFn = Callable[[nn.Module, Inputs, "torch.Tensor | None", float], torch.Tensor]


class Progress(Protocol):
    """Where training reports progress (the CLI draws it with rich)."""

    def start(self, description: str, total: int) -> None: ...
    def advance(self, message: str) -> None: ...


class SilentProgress:
    def start(self, description: str, total: int) -> None: ...
    def advance(self, message: str) -> None: ...


@dataclass(frozen=True)
class TensorData:
    """Model inputs (in forward() order) and optional integer labels, as torch tensors."""

    inputs: Inputs
    y: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.inputs[0])

    def take(self, idx: torch.Tensor) -> TensorData:
        return TensorData(tuple(t[idx] for t in self.inputs), None if self.y is None else self.y[idx])

    @classmethod
    def from_dataset(cls, data: Dataset, input_names: Sequence[str]) -> TensorData:
        y = torch.from_numpy(data.y.astype(np.int64)) if data.labelled else None  # type: ignore[union-attr]
        return cls(to_torch(data.inputs, tuple(input_names)), y)


@dataclass(frozen=True)
class FitResult:
    """The restored epoch, its validation score and how many epochs ran."""

    best_epoch: int
    epochs_run: int
    val_score: float


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; one thread (shared build machines) and deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def split_train_val(data: TensorData, val_fraction: float, seed: int) -> tuple[TensorData, TensorData]:
    """A seeded (train, validation) split; stratified by label when there are labels."""
    rng = np.random.default_rng(seed)
    n = len(data)
    if n < 4:
        raise DataError(f"the training data has {n} samples", "Give at least a few dozen samples to train on")
    if data.y is None:
        order = rng.permutation(n)
        n_val = max(1, round(n * val_fraction))
        val, train = order[:n_val], order[n_val:]
    else:
        labels = data.y.numpy()
        train_parts, val_parts = [], []
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            n_val = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
            val_parts.append(members[:n_val])
            train_parts.append(members[n_val:])
        train, val = np.concatenate(train_parts), np.concatenate(val_parts)
    return data.take(torch.from_numpy(np.sort(train))), data.take(torch.from_numpy(np.sort(val)))


def eval_mode(model: nn.Module) -> nn.Module:
    """``model.eval()``, tolerating modules that fix their mode at export (``torch.export`` programs refuse it)."""
    try:
        return model.eval()
    except NotImplementedError:
        return model


def logits_of(output: Any) -> torch.Tensor:
    """The first output of a model: the class logits for classifiers (multi-output models put them first)."""
    tensors, _ = flatten_outputs(output)
    return tensors[0]


@torch.no_grad()
def predict(model: nn.Module, inputs: Inputs, batch_size: int = 256) -> torch.Tensor:
    """First-output predictions for every row, in eval mode."""
    eval_mode(model)
    n = len(inputs[0])
    return torch.cat([logits_of(model(*(t[i : i + batch_size] for t in inputs))) for i in range(0, n, batch_size)])


def accuracy(model: nn.Module, data: TensorData) -> float:
    """Top-1 accuracy of the first output against ``data.y``."""
    assert data.y is not None
    return (predict(model, data.inputs).argmax(1) == data.y).float().mean().item()


def random_shift(inputs: Inputs, max_shift: int, generator: torch.Generator) -> Inputs:
    """Shift each 4-D float input (N, C, H, W) by up to ``max_shift`` pixels with zero fill; others pass through.

    Small translations are the cheapest invariance to teach a small image
    model, and they stop a student from memorising the teacher on few samples.
    """
    out = []
    for x in inputs:
        if x.ndim != 4 or not x.is_floating_point() or max_shift <= 0:
            out.append(x)
            continue
        n, _, h, w = x.shape
        padded = F.pad(x, (max_shift,) * 4)
        offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
        rows = (offsets[:, 0, None] + torch.arange(h)[None, :])  # (N, H)
        cols = (offsets[:, 1, None] + torch.arange(w)[None, :])  # (N, W)
        batch = torch.arange(n)[:, None, None]
        # Gather every image's window in one indexing op (no Python loop per sample).
        shifted = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        out.append(shifted.contiguous())
    return tuple(out)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to 1% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def fit(
    model: nn.Module,
    train: TensorData,
    val: TensorData,
    options: TrainOptions,
    loss_fn: LossFn,
    score_fn: Callable[[nn.Module, TensorData], float],
    *,
    epochs: int | None = None,
    progress: Progress | None = None,
    description: str = "training",
    before_epoch: Callable[[int], None] | None = None,
    after_step: Callable[[], None] | None = None,
    select_from_epoch: int = 1,
    early_stopping: bool = True,
) -> FitResult:
    """Train ``model`` in place; restore the best validation epoch at or after ``select_from_epoch``.

    ``score_fn(model, val)`` is higher-is-better. ``before_epoch(epoch)`` runs
    before each epoch (1-based), ``after_step()`` after each optimizer step.
    Epochs before ``select_from_epoch`` are never restored (pruning: the
    sparsity is not final yet) and do not count towards patience.
    """
    epochs = options.epochs if epochs is None else epochs
    progress = progress or SilentProgress()
    # No weight decay on norms and biases: decaying them mostly hurts small models.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=options.lr,
    )
    generator = torch.Generator().manual_seed(options.seed)
    n = len(train)
    steps_per_epoch = max(1, math.ceil(n / options.batch_size))
    total = steps_per_epoch * epochs
    warmup = min(steps_per_epoch, total // 10)
    best_score, best_epoch, best_state = -math.inf, 0, None
    step = 0
    epoch = 0
    progress.start(description, epochs)
    for epoch in range(1, epochs + 1):
        if before_epoch is not None:
            before_epoch(epoch)
        model.train()
        order = torch.randperm(n, generator=generator)
        loss_value = float("nan")
        for start in range(0, n, options.batch_size):
            idx = order[start : start + options.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                continue
            batch = train.take(idx)
            inputs = random_shift(batch.inputs, options.augment_shift, generator) if options.augment_shift else batch.inputs
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, warmup, options.lr)
            loss = loss_fn(model, inputs, batch.y, step / max(1, total - 1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            if after_step is not None:
                after_step()
            loss_value = loss.item()
            step += 1
        score = score_fn(model, val)
        if epoch >= select_from_epoch and score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        progress.advance(f"{description}: epoch {epoch}/{epochs} loss {loss_value:.4f} val {score:.4f}")
        if early_stopping and epoch >= select_from_epoch and epoch - max(best_epoch, select_from_epoch) >= options.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch or epoch, epoch, best_score)


def cross_entropy_loss(model: nn.Module, inputs: Inputs, y: torch.Tensor | None, _progress: float) -> torch.Tensor:
    """Plain label loss on the first output."""
    assert y is not None
    return F.cross_entropy(logits_of(model(*inputs)), y)


def accuracy_score(model: nn.Module, val: TensorData) -> float:
    """Validation accuracy, with the mean log-likelihood as a tiny tie-breaker (steadier on small sets)."""
    assert val.y is not None
    logits = predict(model, val.inputs)
    acc = (logits.argmax(1) == val.y).float().mean().item()
    return acc - 1e-3 * F.cross_entropy(logits, val.y).item()


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, example: Inputs) -> int:
    """Multiply-accumulates of one forward pass on ``example`` (give batch 1); convs and matmuls only."""
    from torch.utils.flop_counter import FlopCounterMode

    eval_mode(model)
    with FlopCounterMode(display=False) as counter:
        model(*example)
    return counter.get_total_flops() // 2
