"""Configs of the compression stages: ``[prune]`` and ``[distill]`` in ``edgekit.toml``.

Strict like every edgekit config (unknown keys are errors, values frozen).
Training options shared by both stages live in :class:`TrainOptions`, so the
two sections read the same way. No torch here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from edgekit.strict import StrictModel, validation_problems
from edgekit.errors import ConfigError


class TrainOptions(StrictModel):
    """How the fine-tuning / student training runs (seeded, early-stopped on a validation split)."""

    epochs: int = Field(30, ge=1, description="training epochs (an upper bound when early stopping triggers)")
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0, description="AdamW peak learning rate (linear warm-up, cosine decay)")
    weight_decay: float = Field(1e-4, ge=0)
    val_fraction: float = Field(0.15, gt=0, lt=1, description="share of the training data held out for early stopping")
    patience: int = Field(10, ge=1, description="epochs without a better validation score before stopping")
    seed: int = 0
    augment_shift: int = Field(
        0, ge=0, description="random shift (pixels, zero fill) of 4-D float image inputs during training; 0 = off"
    )


class PruneConfig(TrainOptions):
    """Pruning: ``method = "unstructured"`` zeroes weights, ``"structured"`` removes channels.

    unstructured: global magnitude pruning of every Conv/Linear weight to
    ``sparsity`` (fraction of those weights that become zero), reached
    gradually over ``steps`` pruning events (cubic schedule) during the first
    ``ramp_fraction`` of the epochs, with fine-tuning between them.

    structured: Torch-Pruning ``MetaPruner`` with ``MagnitudeImportance``,
    channel counts rounded to ``round_to``; prunes until the model's MACs are
    at most ``macs_ratio`` of the original (or, without ``macs_ratio``, removes
    ``sparsity`` of the channels), in ``steps`` slices with fine-tuning after
    each. The classifier's output layer is never pruned. ``keep_residual_streams``
    leaves channels joined by residual adds whole and prunes inside the blocks
    (measured on the MobileNetV2 sample at half the MACs: 0.50-0.53× latency
    instead of 0.56-0.64×, see docs/compression.md).
    """

    method: Literal["unstructured", "structured"] = "unstructured"
    sparsity: float | None = Field(None, gt=0, lt=1)
    macs_ratio: float | None = Field(None, gt=0, lt=1, description="structured: keep at most this share of MACs")
    steps: int = Field(5, ge=1, description="pruning events on the way to the target")
    ramp_fraction: float = Field(0.6, gt=0, le=1, description="unstructured: share of epochs spent ramping sparsity")
    epochs_per_step: int = Field(2, ge=0, description="structured: fine-tuning epochs after each pruning slice")
    round_to: int | None = Field(8, ge=1, description="structured: keep channel counts multiples of this")
    max_layer_ratio: float = Field(0.9, gt=0, lt=1, description="structured: most any one layer may lose")
    global_pruning: bool = Field(False, description="structured: rank channels across layers instead of per layer")
    prune_heads: bool = Field(True, description="structured: remove whole attention heads of hand-written attention")
    keep_residual_streams: bool = Field(
        False, description="structured: never narrow channels that residual adds join (prune inside the blocks)"
    )
    ignore: list[str] = Field(default_factory=list, description="module names never to prune")

    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        if self.method == "unstructured":
            if self.sparsity is None:
                raise ValueError("unstructured pruning needs sparsity (a fraction in (0, 1), e.g. 0.8)")
            if self.macs_ratio is not None:
                raise ValueError("macs_ratio applies to structured pruning only")
        elif (self.sparsity is None) == (self.macs_ratio is None):
            raise ValueError("structured pruning needs exactly one of sparsity (channels removed) and macs_ratio")
        return self


class DistillConfig(TrainOptions):
    """Distillation: train a student on the teacher's soft targets plus the labels.

    The student is ``student`` (``module:function`` or ``file.py:function``,
    optional ``student_weights``) or the teacher narrowed to ``width`` of its
    channels (Torch-Pruning, so residual adds, BatchNorm and depthwise convs
    stay consistent). ``init = "teacher"`` keeps the teacher's surviving
    weights as the starting point of a width-derived student.

    Loss: ``alpha * T² * KL(student_T || teacher_T) + (1 - alpha) * CE(labels)``.
    ``alpha_schedule = "linear"`` moves alpha from ``alpha_start`` to ``alpha``
    over training. ``alpha = 1`` needs no labels. ``feature_weight > 0`` adds
    FitNets-style matching of the features entering the output layer, through
    a learned linear map from the student's width to the teacher's.
    """

    student: str | None = None
    student_weights: str | None = None
    width: float | None = Field(None, gt=0, lt=1, description="derive the student: keep this share of channels")
    init: Literal["teacher", "random"] = "teacher"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the soft-target loss at the end of training")
    alpha_schedule: Literal["constant", "linear"] = "constant"
    alpha_start: float = Field(0.0, ge=0, le=1)
    round_to: int | None = Field(8, ge=1, description="width-derived students: channel counts multiples of this")
    feature_weight: float = Field(
        0.0, ge=0, description="weight of matching the student's penultimate features to the teacher's (0 = off)"
    )

    @model_validator(mode="after")
    def _one_student(self) -> DistillConfig:
        if (self.student is None) == (self.width is None):
            raise ValueError("give exactly one of student (a factory) and width (a multiplier in (0, 1))")
        if self.student_weights is not None and self.student is None:
            raise ValueError("student_weights needs student")
        return self

    @property
    def needs_labels(self) -> bool:
        """True when any epoch gives the label loss a non-zero weight."""
        return self.alpha < 1 or (self.alpha_schedule == "linear" and self.alpha_start < 1)


Fraction = Annotated[float, Field(gt=0, lt=1)]
SearchPrecision = Literal["fp32", "fp16", "int8", "dynamic-int8", "int4"]
Objective = Literal["size", "download", "latency"]


class SearchSpace(StrictModel):
    """What the budget-driven search (``edgekit build --auto``) may try, and what it minimises.

    A ``[search]`` table may sit in a target profile (the precisions a device
    can run, ``auto = true`` to search by default) and in the build config
    (compressed variants to try, overriding the profile field by field).

    Each searched target ships one artifact per format its profile names: the
    candidate that meets every budget with the least ``objective`` —
    ``size`` (bytes on the device), ``download`` (gzip-compressed bytes, what a
    release bundle transfers; where unstructured sparsity pays) or
    ``latency`` (p50 on the build host, so it ranks recipes, not devices).
    As for a single precision, candidates slower than FP32 on the host (by
    more than ``max_latency_vs_fp32``) ship only when nothing else passes.
    Candidates are every allowed precision × every compressed variant: the
    model as given, distilled students of each ``width``, the model pruned to
    each ``sparsity`` (unstructured) or ``macs_ratio`` (structured), and every
    student pruned likewise. Variants train with ``train``'s options.
    """

    auto: bool = Field(False, description="search for this target even without --auto")
    objective: Objective = "size"
    precisions: list[SearchPrecision] | None = Field(
        None, description="precisions to try per format (default: every precision the format's backend builds)"
    )
    sparsity: list[Fraction] = Field(default_factory=list, description="unstructured pruning levels to try")
    macs_ratio: list[Fraction] = Field(default_factory=list, description="structured pruning: MAC shares to try")
    width: list[Fraction] = Field(default_factory=list, description="distilled students: width multipliers to try")
    train: TrainOptions = Field(default_factory=TrainOptions, description="training of the compressed variants")
    max_latency_vs_fp32: float | None = Field(
        1.03, gt=0, description="prefer candidates at most this many times the FP32 host latency (inf: no preference)"
    )

    @field_validator("precisions", "sparsity", "macs_ratio", "width")
    @classmethod
    def _no_repeats(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"values listed twice: {value}")
        return value

    @field_validator("precisions")
    @classmethod
    def _something_to_try(cls, value: list[str] | None) -> list[str] | None:
        if value == []:
            raise ValueError("an empty list leaves nothing to search; omit the key to try every precision")
        return value

    def variants(self) -> list[VariantSpec]:
        """The compressed variants to try, the uncompressed model first."""
        students: list[float | None] = [None, *self.width]
        prunes: list[tuple[str, float] | None] = [None, *(("sparsity", s) for s in self.sparsity),
                                                  *(("macs_ratio", r) for r in self.macs_ratio)]
        return [VariantSpec(width=w, prune=p) for w in students for p in prunes]


class VariantSpec(StrictModel):
    """One compressed variant of the model: an optional student width, then an optional pruning."""

    width: float | None = None
    prune: tuple[str, float] | None = None

    @property
    def name(self) -> str:
        """Stable, readable id: ``model``, ``student-w0.5``, ``pruned-s0.8``, ``student-w0.5+pruned-m0.5``."""
        parts = []
        if self.width is not None:
            parts.append(f"student-w{self.width:g}")
        if self.prune is not None:
            kind, value = self.prune
            parts.append(f"pruned-{'s' if kind == 'sparsity' else 'm'}{value:g}")
        return "+".join(parts) or "model"

    def stages(self, train: TrainOptions) -> tuple[DistillConfig | None, PruneConfig | None]:
        """The ``[distill]`` and ``[prune]`` configs that produce this variant."""
        options = train.model_dump()
        distill = DistillConfig(width=self.width, **options) if self.width is not None else None
        prune = None
        if self.prune is not None:
            kind, value = self.prune
            method = "unstructured" if kind == "sparsity" else "structured"
            prune = PruneConfig(method=method, **{kind: value}, **options)
        return distill, prune


def parse_prune(data: dict[str, Any], source: str) -> PruneConfig:
    """Validate a ``[prune]`` table (or CLI options); errors name the key and ``source``."""
    try:
        return PruneConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid [prune] settings in {source}: {validation_problems(exc)}",
                          "Fix the value; docs/compression.md lists the keys") from None


def parse_distill(data: dict[str, Any], source: str) -> DistillConfig:
    """Validate a ``[distill]`` table (or CLI options); errors name the key and ``source``."""
    try:
        return DistillConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid [distill] settings in {source}: {validation_problems(exc)}",
                          "Fix the value; docs/compression.md lists the keys") from None
