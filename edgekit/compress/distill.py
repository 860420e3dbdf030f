"""Knowledge distillation: train a smaller student on a teacher's soft targets plus the labels.

Loss per batch (Hinton et al., 2015)::

    alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − alpha) · CE(student, y)

The T² keeps the soft-target gradients on the label loss's scale as T
changes. ``alpha`` may move linearly during training (labels first, then the
teacher). The teacher sees exactly the (augmented) batch the student sees.

The student is a factory model, or the teacher narrowed by a width multiplier
with Torch-Pruning (which keeps residual adds, BatchNorm and depthwise convs
consistent); such a student may start from the teacher's surviving weights.
Imports torch.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.compress.config import DistillConfig, PruneConfig
from edgekit.compress.train import (
    FitResult,
    Inputs,
    Progress,
    TensorData,
    accuracy_score,
    fit,
    eval_mode,
    logits_of,
    predict,
)
from edgekit.errors import ModelLoadError


def alpha_at(config: DistillConfig, progress: float) -> float:
    """The soft-target weight at training ``progress`` in [0, 1]."""
    if config.alpha_schedule == "constant":
        return config.alpha
    return config.alpha_start + (config.alpha - config.alpha_start) * progress


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor | None, alpha: float, temperature: float
) -> torch.Tensor:
    """The distillation loss above; ``y = None`` (unlabelled data) uses the soft targets alone."""
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (temperature**2)
    if y is None:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, y)


def width_student(teacher: nn.Module, example: Inputs, config: DistillConfig) -> nn.Module:
    """The teacher with ``width`` of its channels kept (output layer untouched); random init unless ``init = "teacher"``."""
    from edgekit.compress.structured import protect_outputs, shrink

    assert config.width is not None
    student = copy.deepcopy(teacher)
    shrink_config = PruneConfig(method="structured", sparsity=1.0 - config.width, round_to=config.round_to,
                                max_layer_ratio=max(0.5, min(0.95, 1.0 - config.width + 0.05)))
    shrink_config = protect_outputs(student, example, shrink_config, 1.0 - config.width)
    shrink(student, example, shrink_config, 1.0 - config.width)
    if config.init == "random":
        torch.manual_seed(config.seed)
        for module in student.modules():
            if module is not student and hasattr(module, "reset_parameters"):
                module.reset_parameters()  # type: ignore[operator]
    return student


def factory_student(config: DistillConfig, base_dir: Path) -> nn.Module:
    """The student built by ``config.student`` (with ``student_weights`` if given)."""
    from edgekit.model import load_factory

    assert config.student is not None
    weights = None
    if config.student_weights is not None:
        weights = Path(config.student_weights)
        weights = weights if weights.is_absolute() else base_dir / weights
    torch.manual_seed(config.seed)  # the factory's random init is part of the run's seed
    return load_factory(config.student, weights, base_dir).module


def check_student(student: nn.Module, teacher: nn.Module, example: Inputs, student_name: str) -> None:
    """Refuse a student that cannot take the teacher's inputs or does not produce the teacher's output shapes."""
    from edgekit.model import flatten_outputs

    with torch.no_grad():
        expected = [tuple(t.shape) for t in flatten_outputs(eval_mode(teacher)(*example))[0]]
        try:
            got = [tuple(t.shape) for t in flatten_outputs(eval_mode(student)(*example))[0]]
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            shapes = ", ".join(f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in example)
            raise ModelLoadError(
                f"the student {student_name} does not accept the teacher's inputs ({shapes}): {first}",
                "Give a student whose forward() takes the same inputs as the teacher's",
            ) from None
    if got != expected:
        raise ModelLoadError(
            f"the student {student_name} produces outputs of shape {got}, the teacher {expected}",
            "The student must produce the teacher's output shapes (same number of classes)",
        )


class FeatureTap:
    """Keeps the latest input of a layer: the features a model's output layer reads."""

    def __init__(self, layer: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        self.value = inputs[0]

    def remove(self) -> None:
        self._handle.remove()


class StudentWithProjection(nn.Module):
    """The student plus the feature projection, trained together; forward() is the student's alone."""

    def __init__(self, student: nn.Module, projection: nn.Linear) -> None:
        super().__init__()
        self.student = student
        self.projection = projection

    def forward(self, *inputs: torch.Tensor) -> object:
        return self.student(*inputs)


def feature_layers(student: nn.Module, teacher: nn.Module, example: Inputs) -> tuple[nn.Linear, nn.Linear]:
    """The Linear output layers of student and teacher whose inputs are matched, or ConfigError."""
    from edgekit.compress.structured import output_layers
    from edgekit.errors import ConfigError

    layers = []
    for role, model in (("student", student), ("teacher", teacher)):
        found = output_layers(model, example)
        if not found or not isinstance(found[0], nn.Linear):
            raise ConfigError(
                f"feature matching needs the {role}'s first output to come straight from an nn.Linear layer",
                "Set distill.feature_weight = 0 for this model",
            )
        layers.append(found[0])
    return layers[0], layers[1]


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train: TensorData,
    val: TensorData,
    config: DistillConfig,
    progress: Progress | None = None,
) -> FitResult:
    """Train ``student`` in place from ``teacher`` (frozen, eval mode); restore its best validation epoch.

    Validation: accuracy when ``val`` has labels, otherwise top-1 agreement with the teacher.
    """
    teacher = eval_mode(teacher)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    taps: list[FeatureTap] = []
    model: nn.Module = student
    if config.feature_weight > 0:
        student_layer, teacher_layer = feature_layers(student, teacher, tuple(t[:2] for t in train.inputs))
        student_tap, teacher_tap = FeatureTap(student_layer), FeatureTap(teacher_layer)
        taps = [student_tap, teacher_tap]
        torch.manual_seed(config.seed)
        model = StudentWithProjection(student, nn.Linear(student_layer.in_features, teacher_layer.in_features, bias=False))

    def loss_fn(trained: nn.Module, inputs: Inputs, y: torch.Tensor | None, progress_: float) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = logits_of(teacher(*inputs))
        loss = kd_loss(logits_of(trained(*inputs)), teacher_logits, y, alpha_at(config, progress_), config.temperature)
        if taps:
            target = taps[1].value
            assert taps[0].value is not None and target is not None
            mapped = trained.projection(taps[0].value)  # type: ignore[operator]
            # Normalised by the teacher features' power, so the weight does not depend on their scale.
            loss = loss + config.feature_weight * F.mse_loss(mapped, target) / target.pow(2).mean().clamp_min(1e-8)
        return loss

    if val.y is not None:
        score_fn = accuracy_score
    else:
        teacher_top1 = predict(teacher, val.inputs).argmax(1)

        def score_fn(candidate: nn.Module, data: TensorData) -> float:
            return (predict(candidate, data.inputs).argmax(1) == teacher_top1).float().mean().item()

    try:
        return fit(model, train, val, config, loss_fn, score_fn, progress=progress, description="distilling")
    finally:
        for tap in taps:
            tap.remove()


def train_on_labels(student: nn.Module, train: TensorData, val: TensorData, config: DistillConfig,
                    progress: Progress | None = None) -> FitResult:
    """The no-teacher baseline: the same student, data, schedule and seed, labels only."""
    from edgekit.compress.train import cross_entropy_loss

    return fit(student, train, val, config, cross_entropy_loss, accuracy_score, progress=progress,
               description="labels only")
