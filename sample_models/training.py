"""Shared, seeded training helpers for the sample models.

Every sample trains on the ``train`` split only. A stratified validation slice
of that split drives early stopping; the ``holdout`` split is read once, after
training, to report accuracy (and is what edgekit later calibrates and
evaluates on).

Each sample's ``train.py`` describes its model, data and :class:`TrainConfig`
and calls :func:`train_sample`, which trains, saves ``weights.safetensors``,
reloads it strictly into a fresh model and measures holdout accuracy.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

DATA_DIR = Path(__file__).resolve().parent / "data"
NUM_THREADS = 2  # light on shared machines, and a fixed count keeps reruns bit-identical

Inputs = tuple[torch.Tensor, ...]
Augment = Callable[[Inputs, torch.Generator], Inputs]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run."""

    epochs: int = 60
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    label_smoothing: float = 0.0
    grad_clip: float | None = 1.0
    val_fraction: float = 0.15
    patience: int = 15  # epochs without a better validation score before stopping
    seed: int = 0


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch, and make torch pick deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)


def load_npz(path: Path, input_names: Sequence[str]) -> tuple[Inputs, torch.Tensor]:
    """Load the named input arrays and the labels ``y`` of an ``.npz`` as tensors."""
    with np.load(path, allow_pickle=False) as archive:
        inputs = tuple(torch.from_numpy(archive[name].copy()) for name in input_names)
        y = torch.from_numpy(archive["y"].astype(np.int64))
    return inputs, y


def stratified_split(y: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a stratified (train, validation) split of ``y``, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    train_idx: list[np.ndarray] = []
    val_idx: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = max(1, round(len(members) * val_fraction))
        val_idx.append(members[:n_val])
        train_idx.append(members[n_val:])
    return torch.from_numpy(np.sort(np.concatenate(train_idx))), torch.from_numpy(np.sort(np.concatenate(val_idx)))


def take(inputs: Inputs, idx: torch.Tensor) -> Inputs:
    """The rows ``idx`` of every input."""
    return tuple(t[idx] for t in inputs)


def logits_of(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The class logits of a model output (multi-output models put them first)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def predict(model: nn.Module, inputs: Inputs, batch_size: int = 256) -> torch.Tensor:
    """Logits for all rows of ``inputs`` in eval mode."""
    model.eval()
    chunks = [
        logits_of(model(*take(inputs, torch.arange(i, min(i + batch_size, len(inputs[0]))))))
        for i in range(0, len(inputs[0]), batch_size)
    ]
    return torch.cat(chunks)


def evaluate(model: nn.Module, inputs: Inputs, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``inputs``."""
    logits = predict(model, inputs)
    return (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class FitResult:
    """What :func:`fit` found: the restored epoch and its validation scores."""

    best_epoch: int
    epochs_run: int
    val_accuracy: float
    val_loss: float


def decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into (decayed, not decayed).

    Only Linear and Conv weights are decayed. Pulling embeddings (token or
    position) and norm/bias parameters towards zero mostly hurts small models:
    a decayed position embedding loses exactly the information a pixel-token
    model needs.
    """
    decay_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
    }
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) in decay_ids], [p for p in params if id(p) not in decay_ids]


def fit(
    model: nn.Module,
    inputs: Inputs,
    y: torch.Tensor,
    config: TrainConfig,
    augment: Augment | None = None,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train ``model`` in place with AdamW + cosine LR; restore the best validation epoch.

    The validation slice comes out of ``inputs`` (the train split). The best
    epoch is the one with the highest validation accuracy, ties broken by the
    lower validation loss, which is steadier than accuracy on ~190 samples.
    """
    train_idx, val_idx = stratified_split(y, config.val_fraction, config.seed)
    train_x, train_y = take(inputs, train_idx), y[train_idx]
    val_x, val_y = take(inputs, val_idx), y[val_idx]

    decay, no_decay = decay_groups(model)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    generator = torch.Generator().manual_seed(config.seed)
    n = len(train_y)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = steps_per_epoch * config.warmup_epochs

    best_key = (-1.0, math.inf)
    best_state: dict[str, torch.Tensor] = {}
    best_epoch = 0
    step = 0
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            if len(batch) < 2:  # BatchNorm cannot train on a single sample
                continue
            xb, yb = take(train_x, batch), train_y[batch]
            if augment is not None:
                xb = augment(xb, generator)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, warmup_steps, config.lr)
            loss = F.cross_entropy(logits_of(model(*xb)), yb, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
        val_acc, val_loss = evaluate(model, val_x, val_y)
        key = (val_acc, -val_loss)
        if key > (best_key[0], -best_key[1]):
            best_key, best_epoch = (val_acc, val_loss), epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if epoch % 5 == 0 or epoch == 1:
            log(f"  epoch {epoch:3d}  loss {loss.item():.4f}  val acc {val_acc:.4f}  val loss {val_loss:.4f}")
        if epoch - best_epoch >= config.patience:
            log(f"  early stop at epoch {epoch}: no better validation score since epoch {best_epoch}")
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, epoch, best_key[0], best_key[1])


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def count_macs(model: nn.Module, example: Inputs) -> int:
    """Multiply-accumulates of one forward pass on ``example`` (use batch 1).

    Counts convolutions and matrix products, including the hand-written
    attention matmuls; element-wise ops (norms, activations) are not MACs.
    """
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(*example)
    return counter.get_total_flops() // 2


def save_weights(model: nn.Module, path: Path) -> None:
    """Save the state_dict as safetensors (contiguous copies, as save_file requires).

    Written to a temporary file and renamed, so an interrupted run never
    leaves a truncated weights file behind.
    """
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    safetensors.torch.save_file(state, str(tmp))
    tmp.chmod(0o644)  # save_file creates owner-only files; these are committed and shared
    tmp.replace(path)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load safetensors weights with ``strict=True``; returns the model in eval mode."""
    model.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
    return model.eval()


def train_sample(
    name: str,
    create: Callable[[], nn.Module],
    train_path: Path,
    holdout_path: Path,
    input_names: Sequence[str],
    weights_path: Path,
    config: TrainConfig,
    augment: Augment | None = None,
) -> dict[str, float | int | str]:
    """Train one sample end to end; return its summary (params, MACs, accuracy, time)."""
    seed_everything(config.seed)
    print(f"[{name}] training with {asdict(config)}")
    train_x, train_y = load_npz(train_path, input_names)
    holdout_x, holdout_y = load_npz(holdout_path, input_names)

    model = create()
    started = time.perf_counter()
    result = fit(model, train_x, train_y, config, augment)
    seconds = time.perf_counter() - started
    save_weights(model, weights_path)

    # Measure the weights as shipped: a fresh model, strict load, eval mode.
    shipped = load_weights(create(), weights_path)
    holdout_acc, _ = evaluate(shipped, holdout_x, holdout_y)
    summary: dict[str, float | int | str] = {
        "name": name,
        "params": count_params(shipped),
        "macs": count_macs(shipped, take(holdout_x, torch.arange(1))),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val_accuracy": round(result.val_accuracy, 4),
        "holdout_accuracy": round(holdout_acc, 4),
        "train_seconds": round(seconds, 1),
    }
    print(
        f"[{name}] params {summary['params']:,}  MACs {summary['macs']:,}  "
        f"best epoch {result.best_epoch}/{result.epochs_run}  val acc {result.val_accuracy:.4f}  "
        f"holdout acc {holdout_acc:.4f} ({len(holdout_y)} samples)  train {seconds:.0f}s"
    )
    return summary


def random_shift(max_shift: int) -> Augment:
    """Augmentation: shift each image (N, C, H, W) by up to ``max_shift`` pixels, zero fill.

    Digits in this dataset are roughly centred but not exactly; small shifts
    are the cheapest invariance to teach a small model.
    """

    def apply(inputs: Inputs, generator: torch.Generator) -> Inputs:
        (x,) = inputs
        n, _, h, w = x.shape
        padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
        offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
        out = torch.stack(
            [padded[i, :, int(dy) : int(dy) + h, int(dx) : int(dx) + w] for i, (dy, dx) in enumerate(offsets)]
        )
        return (out,)

    return apply
