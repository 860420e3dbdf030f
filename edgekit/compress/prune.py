"""Unstructured pruning: global magnitude, gradual (cubic) schedule, fine-tuning between steps.

Every Conv/Linear weight competes in one global ranking by |w|; the smallest
become exact zeros. Sparsity rises along the cubic schedule of Zhu & Gupta
(2017): fast at first, when many weights are nearly useless, then slowly, so
fine-tuning can recover between steps. Masks are re-applied after every
optimizer step (AdamW would otherwise revive pruned weights), and the best
validation epoch is chosen only among epochs at the final sparsity.

Zeros in a dense tensor change neither file size nor speed; what they do buy
is compressibility (see ``measure.footprint``'s gzip size). Imports torch.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekit.compress.config import PruneConfig
from edgekit.compress.measure import prunable_weights
from edgekit.compress.train import (
    FitResult,
    Progress,
    TensorData,
    accuracy_score,
    cross_entropy_loss,
    fit,
)
from edgekit.errors import UnsupportedModelError


def prunable_layers(model: nn.Module, ignore: list[str]) -> list[tuple[str, nn.Module]]:
    """The Conv/Linear layers to prune, or UnsupportedModelError when there are none."""
    unknown = [name for name in ignore if name not in dict(model.named_modules())]
    if unknown:
        from edgekit.errors import ConfigError

        raise ConfigError(f"prune.ignore names modules the model does not have: {', '.join(unknown)}",
                          "Use names from model.named_modules(), e.g. 'features.0.0'")
    layers = [(name, m) for name, m in prunable_weights(model) if name not in ignore and m.weight.requires_grad]
    if not layers:
        raise UnsupportedModelError(
            f"the model ({type(model).__name__}) has no prunable layers (no Conv or Linear weights outside prune.ignore)",
            "Pruning works on models built from nn.Conv*/nn.Linear layers; remove names from prune.ignore or skip pruning",
        )
    return layers


def cubic_sparsity(event: int, events: int, final: float) -> float:
    """Sparsity after pruning event ``event`` (1-based) of ``events``: final·(1 − (1 − t)³)."""
    t = min(1.0, event / events)
    return final * (1.0 - (1.0 - t) ** 3)


@torch.no_grad()
def global_magnitude_masks(layers: list[tuple[str, nn.Module]], sparsity: float) -> dict[str, torch.Tensor]:
    """Boolean keep-masks: exactly ``round(sparsity · total)`` smallest-|w| weights across all layers dropped."""
    scores = torch.cat([m.weight.detach().abs().flatten() for _, m in layers])
    drop = int(round(sparsity * scores.numel()))
    keep = torch.ones_like(scores, dtype=torch.bool)
    if drop > 0:
        # argsort with a stable order breaks ties deterministically, so the count is exact.
        order = torch.argsort(scores, stable=True)
        keep[order[:drop]] = False
    masks: dict[str, torch.Tensor] = {}
    offset = 0
    for name, module in layers:
        count = module.weight.numel()
        masks[name] = keep[offset : offset + count].view_as(module.weight)
        offset += count
    return masks


@torch.no_grad()
def apply_masks(layers: list[tuple[str, nn.Module]], masks: dict[str, torch.Tensor]) -> None:
    """Zero the weights each mask drops (in place)."""
    for name, module in layers:
        module.weight.mul_(masks[name])


def event_epochs(epochs: int, steps: int, ramp_fraction: float) -> list[int]:
    """The (1-based) epochs at whose start each pruning event happens, spread over the ramp."""
    ramp = max(1, min(epochs, round(epochs * ramp_fraction)))
    return [1 + (k * ramp) // steps for k in range(steps)]


def prune_unstructured(
    model: nn.Module,
    train: TensorData,
    val: TensorData,
    config: PruneConfig,
    progress: Progress | None = None,
) -> FitResult:
    """Prune ``model`` in place to ``config.sparsity`` of its Conv/Linear weights, fine-tuning on ``train``.

    Needs labels (``train.y``); the caller checks that before calling. On
    return the model holds exact zeros at the final sparsity and the weights
    of the best validation epoch at that sparsity.
    """
    assert config.sparsity is not None
    layers = prunable_layers(model, config.ignore)
    epochs_at = event_epochs(config.epochs, config.steps, config.ramp_fraction)
    schedule = {}
    for event, epoch in enumerate(epochs_at, start=1):
        schedule[epoch] = cubic_sparsity(event, config.steps, config.sparsity)  # several events in one epoch: the last wins
    masks: dict[str, torch.Tensor] = {}

    def before_epoch(epoch: int) -> None:
        if epoch in schedule:
            masks.update(global_magnitude_masks(layers, schedule[epoch]))
            apply_masks(layers, masks)

    def after_step() -> None:
        if masks:
            apply_masks(layers, masks)

    result = fit(
        model, train, val, config, cross_entropy_loss, accuracy_score,
        progress=progress, description=f"pruning to {config.sparsity:.0%} sparsity",
        before_epoch=before_epoch, after_step=after_step, select_from_epoch=max(schedule),
    )
    # The restored state was saved after a masked step, but re-apply to be exact.
    apply_masks(layers, masks)
    return result
