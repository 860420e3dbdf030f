"""The torch models a build exports: the model as given, and the search's compressed variants.

A :class:`ModelVariant` carries what the pipeline needs per model: its FP32
outputs on the evaluation split (the reference its artifacts are compared
with), its accuracy, example inputs for export, and MACs / parameters for the
estimates. ``compressed_variants`` trains the variants a ``[search]`` asks
for (distilled students, pruned models, pruned students), seeded, each from
the model as given; a variant that cannot be made (no prunable layer, a MACs
target no ratio reaches) is reported, not fatal. Imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.compress.config import SearchSpace, VariantSpec
from edgekit.data import Dataset, Split
from edgekit.errors import EdgekitError
from edgekit.model import LoadedModel

BASE = "model"  # the name of the model as given (after any [prune] / [distill] of the build config)


@dataclass
class ModelVariant:
    """One torch model of the build and its FP32 facts on the build's data split."""

    name: str
    model: LoadedModel
    reference: list[np.ndarray]  # FP32 outputs on the evaluation split
    default_output_names: tuple[str, ...]
    example_inputs: tuple[Any, ...]  # batch 2 (or the model's fixed batch) from the calibration split, as torch tensors
    macs: int
    parameters: int
    accuracy: float | None = None
    compression: list[dict[str, Any]] = field(default_factory=list)
    calibration_reference: list[np.ndarray] = field(default_factory=list)  # FP32 outputs on the calibration split


def make_variant(name: str, model: LoadedModel, data: Split, compression: list[dict[str, Any]] | None = None,
                 count: Any = None) -> ModelVariant:
    """Run ``model`` on the evaluation split and collect what export and estimates need.

    ``count(module, example_inputs) -> MACs`` replaces ``estimate.count_macs`` (the build passes its cached form).
    """
    from edgekit.estimate import count_macs, count_parameters
    from edgekit.model import run_reference, to_torch
    from edgekit.validate import accuracy

    from edgekit.batching import pad_to

    reference, default_names = run_reference(model, data.evaluation)
    calibration_reference, _ = run_reference(model, data.calibration)
    batch = model.fixed_batch or 2
    first, _ = pad_to(data.calibration.take(np.arange(min(batch, len(data.calibration)))).inputs, batch)
    example_inputs = to_torch(first, model.input_names)
    # MACs per sample: a fixed-batch model only runs at its batch, so count that and divide.
    macs = (count or count_macs)(model.module, tuple(t[: model.fixed_batch or 1] for t in example_inputs)) \
        // (model.fixed_batch or 1)
    score = accuracy(reference, data.evaluation.y) if data.evaluation.labelled else None  # type: ignore[arg-type]
    return ModelVariant(name, model, reference, tuple(default_names), example_inputs, macs,
                        count_parameters(model.module), score, list(compression or []), calibration_reference)


def wanted_specs(spaces: list[SearchSpace]) -> list[tuple[VariantSpec, SearchSpace]]:
    """Distinct compressed variants over several targets' search spaces, students before pruned students."""
    seen: dict[str, tuple[VariantSpec, SearchSpace]] = {}
    for space in spaces:
        for spec in space.variants():
            if spec.name != BASE:
                seen.setdefault(spec.name, (spec, space))
    return sorted(seen.values(), key=lambda item: (item[0].width is not None and item[0].prune is not None))


def compressed_variants(
    base: ModelVariant,
    specs: list[tuple[VariantSpec, SearchSpace]],
    train_data: Dataset,
    data: Split,
    base_dir: Any,
    progress: Any = None,
    compress: Any = None,
) -> tuple[dict[str, ModelVariant], dict[str, str]]:
    """Train every variant in ``specs``; returns the variants by name and, by name, why any could not be made.

    A pruned student starts from the student variant of the same width, so
    each student is trained once. ``compress`` replaces ``compress_for_build`` (the build passes its
    cached form, ``edgekit.pipeline.cached.compress_cached``).
    """
    from edgekit.compress.stage import compress_for_build

    compress = compress or compress_for_build

    made: dict[str, ModelVariant] = {}
    failed: dict[str, str] = {}
    for spec, space in specs:
        distill, prune = spec.stages(space.train)
        source, history = base.model, list(base.compression)
        if spec.width is not None and spec.prune is not None:
            student = VariantSpec(width=spec.width).name
            if student not in made:
                failed[spec.name] = failed.get(student, f"its student {student} was not made")
                continue
            source, history, distill = made[student].model, list(made[student].compression), None
        try:
            model, reports = compress(source, train_data, prune=prune, distill=distill, base_dir=base_dir,
                                                progress=progress)
        except EdgekitError as exc:
            failed[spec.name] = exc.message
            continue
        made[spec.name] = make_variant(spec.name, model, data, history + reports)
    return made, failed
