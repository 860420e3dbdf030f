"""Structured pruning: remove whole channels, filters and attention heads, leaving a smaller dense network.

Torch-Pruning's dependency graph keeps coupled layers consistent: channels
joined by a residual add are removed together, BatchNorm follows its conv,
a depthwise conv loses exactly the channels its input lost, and q/k/v of
hand-written attention lose whole heads. Channel counts are rounded to
``round_to`` (8 by default): measured in DESIGN.md, odd counts gave almost no
speed-up because the kernels vectorise over groups of channels.

Layers whose output *is* a model output (the classifier) are never pruned, so
the model's interface is unchanged; that is checked after every step.
Imports torch and torch_pruning (the ``compress`` extra).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgekit.compress.config import PruneConfig
from edgekit.compress.measure import prunable_weights
from edgekit.compress.train import FitResult, Inputs, Progress, TensorData, accuracy_score, count_macs, eval_mode, fit
from edgekit.errors import BackendUnavailableError, UnsupportedModelError

HEAD_ATTRIBUTES = ("heads", "num_heads")


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise BackendUnavailableError(
            "structured pruning needs the torch-pruning package, which is not installed",
            'Install it with: pip install "edgekit[compress]"',
        ) from None
    return torch_pruning


@dataclass(frozen=True)
class AttentionInfo:
    """A hand-written attention module: its head-count attribute and its q/k/v (or fused qkv) Linears."""

    module: nn.Module
    attribute: str
    projections: tuple[nn.Linear, ...]
    head_dim: int


def find_attention(model: nn.Module) -> list[AttentionInfo]:
    """Modules with an int ``heads``/``num_heads`` attribute and Linear children ``q``, ``k``, ``v`` (or ``qkv``).

    ``nn.MultiheadAttention`` is not found: Torch-Pruning leaves it untouched
    (DESIGN.md), and its in-projection is one fused parameter anyway.
    """
    found = []
    for module in model.modules():
        attribute = next((a for a in HEAD_ATTRIBUTES if isinstance(getattr(module, a, None), int)), None)
        if attribute is None:
            continue
        names = ("q", "k", "v") if all(isinstance(getattr(module, n, None), nn.Linear) for n in "qkv") else ("qkv",)
        projections = tuple(getattr(module, n, None) for n in names)
        if not all(isinstance(p, nn.Linear) for p in projections):
            continue
        heads = getattr(module, attribute)
        width = projections[0].out_features // (3 if names == ("qkv",) else 1)
        if heads < 1 or width % heads:
            continue
        found.append(AttentionInfo(module, attribute, projections, width // heads))  # type: ignore[arg-type]
    return found


def output_layers(model: nn.Module, example: Inputs) -> list[nn.Module]:
    """Conv/Linear layers whose result is returned by the model as-is (e.g. the classifier)."""
    from edgekit.model import flatten_outputs

    # Keep each hooked output alive: a freed intermediate's id() can be reused
    # by a later tensor, which would mark the wrong layer as an output layer.
    produced: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda mod, _inp, out: produced.__setitem__(id(out), (mod, out)))
             for _, m in prunable_weights(model)]
    try:
        with torch.no_grad():
            outputs, _ = flatten_outputs(eval_mode(model)(*example))
    finally:
        for hook in hooks:
            hook.remove()
    return [produced[id(t)][0] for t in outputs if id(t) in produced and produced[id(t)][1] is t]


def output_shapes(model: nn.Module, example: Inputs) -> list[tuple[int, ...]]:
    from edgekit.model import flatten_outputs

    with torch.no_grad():
        outputs, _ = flatten_outputs(eval_mode(model)(*example))
    return [tuple(t.shape) for t in outputs]


def residual_writers(model: nn.Module, example: Inputs, ignored: list[nn.Module]) -> list[nn.Module]:
    """Conv/Linear layers whose output channels a residual add ties to another layer's.

    Found from Torch-Pruning's dependency groups: a group in which two or more
    (non-depthwise) layers would lose output channels is a stream that adds
    join. In inverted-residual nets these are the narrow bottlenecks: cheap in
    latency, and the information bottleneck of the block.
    """
    tp = _torch_pruning()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    out_handlers = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
    found: list[nn.Module] = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.modules.conv._ConvNd, nn.Linear]):
        writers = []
        for item in group:
            module = item.dep.target.module
            depthwise = isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
            if item.dep.handler in out_handlers and not depthwise and module not in writers:
                writers.append(module)
        if len(writers) >= 2:
            found += [m for m in writers if m not in found]
    return found


def make_pruner(model: nn.Module, example: Inputs, config: PruneConfig, ratio: float, steps: int) -> Any:
    """A MetaPruner that removes ``ratio`` of each group's channels over ``steps`` calls to ``step()``."""
    tp = _torch_pruning()
    names = dict(model.named_modules())
    ignored = output_layers(model, example) + [names[n] for n in config.ignore]
    if config.keep_residual_streams:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ignored += residual_writers(model, example, ignored)
    prunable = [m for _, m in prunable_weights(model) if m not in ignored]
    if not prunable:
        raise UnsupportedModelError(
            f"the model ({type(model).__name__}) has no prunable layers: no Conv/Linear besides its output layer "
            "and prune.ignore",
            "Structured pruning needs hidden Conv or Linear layers; skip pruning for this model",
        )
    attention = find_attention(model)
    num_heads = {p: getattr(a.module, a.attribute) for a in attention for p in a.projections}
    with warnings.catch_warnings():
        # Torch-Pruning warns about parameters outside layers (position embeddings) and guesses their
        # channel dim, which is right for (1, T, D) embeddings; the shape check below catches a wrong guess.
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=ratio,
            max_pruning_ratio=config.max_layer_ratio,
            global_pruning=config.global_pruning,
            iterative_steps=steps,
            ignored_layers=ignored,
            round_to=config.round_to,
            num_heads=num_heads,
            prune_num_heads=bool(num_heads) and config.prune_heads,
            prune_head_dims=False,  # keep head_dim: the attention code reshapes to (heads, head_dim)
            head_pruning_ratio=ratio if num_heads and config.prune_heads else 0.0,
        )
    pruner.edgekit_attention = attention  # what sync_attention updates after each step
    return pruner


def sync_attention(attention: list[AttentionInfo]) -> None:
    """After heads were removed, store the new head counts where the attention's forward() reads them."""
    for info in attention:
        width = info.projections[0].out_features // (3 if len(info.projections) == 1 else 1)
        setattr(info.module, info.attribute, width // info.head_dim)


def _step(pruner: Any, model: nn.Module, example: Inputs, shapes: list[tuple[int, ...]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner.step()
    sync_attention(pruner.edgekit_attention)
    try:
        after = output_shapes(model, example)
    except Exception as exc:  # a reshape the dependency graph did not see
        raise UnsupportedModelError(
            f"structured pruning broke the model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            "Add the layers involved to prune.ignore, or use unstructured pruning",
        ) from None
    if after != shapes:
        raise UnsupportedModelError(
            f"structured pruning changed the model's output shapes from {shapes} to {after}",
            "Add the layers that produce an output (e.g. an embedding projection) to prune.ignore",
        )


def shrink(model: nn.Module, example: Inputs, config: PruneConfig, ratio: float, steps: int = 1) -> nn.Module:
    """Remove ``ratio`` of the channels in ``steps`` slices without training; returns the same, now smaller, module.

    Pruning a copy this way is how :func:`ratio_for_macs` predicts the MACs a
    ratio gives: the same weights and ratio choose the same channels.
    """
    shapes = output_shapes(model, example)
    pruner = make_pruner(model, example, config, ratio, steps=steps)
    for _ in range(steps):
        _step(pruner, model, example, shapes)
    return model


def protect_outputs(model: nn.Module, example: Inputs, config: PruneConfig, ratio: float) -> PruneConfig:
    """``config`` with layers added to ``ignore`` so that pruning keeps every output's shape.

    A returned tensor that no single layer produces (a transformer's pooled
    residual stream, returned as an embedding) has its width set by every
    layer that writes to that stream. A trial prune on a copy finds out; the
    writers (layers whose output width is the changed output's, apart from
    attention q/k/v, whose heads can still go) are then left unpruned.
    """
    from edgekit.errors import UnsupportedModelError as _Unsupported

    try:
        shrink(copy.deepcopy(model), example, config, ratio)
        return config
    except _Unsupported:
        pass
    shapes = output_shapes(model, example)
    widths = {shape[-1] for shape in shapes if shape}
    projections = {id(p) for info in find_attention(model) for p in info.projections}
    writers = [
        name for name, module in prunable_weights(model)
        if id(module) not in projections and name not in config.ignore
        and (module.out_features if isinstance(module, nn.Linear) else module.out_channels) in widths
    ]
    protected = config.model_copy(update={"ignore": [*config.ignore, *writers]})
    shrink(copy.deepcopy(model), example, protected, ratio)  # still failing: the error names the problem
    return protected


def ratio_for_macs(model: nn.Module, example: Inputs, config: PruneConfig, target: float) -> tuple[float, float]:
    """Smallest channel ratio whose pruned copy has at most ``target`` of the MACs; bisection on copies.

    Returns (ratio, achieved MACs fraction). MACs are a step function of the
    ratio once channel counts are rounded, hence a search rather than a formula.
    Exact for the weights it is given; :func:`prune_structured` therefore
    searches again before every slice (fine-tuning between slices can change
    which layers rank lowest under global ranking).
    """
    base = count_macs(model, example)

    def macs_at(ratio: float) -> float:
        return count_macs(shrink(copy.deepcopy(model), example, config, ratio, config.steps), example) / base

    # Not monotone: with rounding, a ratio that would empty a small layer skips that layer entirely.
    # So scan a coarse grid for the first ratio that meets the target, then bisect below it.
    grid = [round(0.1 * k, 2) for k in range(1, 10) if 0.1 * k <= config.max_layer_ratio + 1e-9]
    low, high, achieved = 0.0, None, None
    for ratio in grid:
        fraction = macs_at(ratio)
        if fraction <= target:
            high, achieved = ratio, fraction
            break
        low = ratio
    if high is None or achieved is None:
        raise UnsupportedModelError(
            f"no channel ratio up to {config.max_layer_ratio:.0%} per layer brings the MACs to {target:.0%} "
            "(layers too small to prune at this rounding are skipped)",
            "Raise prune.max_layer_ratio, lower round_to, or choose a milder target",
        )
    for _ in range(6):
        mid = (low + high) / 2
        fraction = macs_at(mid)
        if fraction <= target:
            high, achieved = mid, fraction
        else:
            low = mid
    return high, achieved


def prune_structured(
    model: nn.Module,
    example: Inputs,
    train: TensorData,
    val: TensorData,
    config: PruneConfig,
    progress: Progress | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
) -> tuple[nn.Module, FitResult, list[float], PruneConfig]:
    """Prune channels of ``model`` (in place) in ``config.steps`` slices, fine-tuning after each.

    ``example`` is a batch-1 input used to trace the dependency graph. With
    ``macs_ratio``, every slice searches the channel ratio that brings the
    *current* (fine-tuned) model to its share of the MACs budget, so the
    target holds even when fine-tuning changes which channels rank lowest
    (global ranking). With ``sparsity``, one iterative pruner removes that
    share of channels over the slices.

    Returns the pruned model, the final fine-tuning result, the channel ratio
    of each slice and the config actually applied (``ignore`` may have grown,
    see :func:`protect_outputs`).
    """
    from edgekit.compress.train import cross_entropy_loss

    loss_fn = loss_fn or cross_entropy_loss
    config = protect_outputs(model, example, config, config.sparsity or 0.5)
    shapes = output_shapes(model, example)
    ratios: list[float] = []
    if config.macs_ratio is not None:
        base = count_macs(model, example)
        one_step = config.model_copy(update={"steps": 1})

        def prune_slice(index: int) -> None:
            assert config.macs_ratio is not None
            goal = base * (1.0 - (1.0 - config.macs_ratio) * index / config.steps)
            current = count_macs(model, example)
            if current <= goal:
                ratios.append(0.0)
                return
            ratio, _ = ratio_for_macs(model, example, one_step, goal / current)
            shrink(model, example, one_step, ratio)
            ratios.append(round(ratio, 4))
    else:
        assert config.sparsity is not None
        pruner = make_pruner(model, example, config, config.sparsity, steps=config.steps)

        def prune_slice(index: int) -> None:
            _step(pruner, model, example, shapes)
            ratios.append(round(config.sparsity * index / config.steps, 4))  # type: ignore[operator]

    result = FitResult(0, 0, float("nan"))
    for index in range(1, config.steps + 1):
        prune_slice(index)
        last = index == config.steps
        epochs = config.epochs if last else config.epochs_per_step
        if epochs == 0:
            continue
        # A new optimizer every slice: the pruned parameters are new tensors.
        result = fit(
            model, train, val, config, loss_fn, accuracy_score, epochs=epochs, progress=progress,
            description=f"structured step {index}/{config.steps}", early_stopping=last,
        )
    return model, result, ratios, config
