"""Stage 1 of a build: load the model and data, compress, split, and run the FP32 torch reference.

This is also where data that does not fit the model is refused, before any
conversion. The result is one frozen ``Prepared`` record that every later
stage reads.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit import backends
from edgekit.config import BuildConfig, TargetProfile
from edgekit.data import Dataset, Split, bind_inputs, load_npz, split
from edgekit.errors import DataError, InputError
from edgekit.fidelity import FidelityTarget
from edgekit.pipeline.cached import compress_cached, macs_cached
from edgekit.pipeline.inputs import BuildInputs, Reporter, searched

if TYPE_CHECKING:
    from edgekit.attacks import AttackSuite
    from edgekit.model import LoadedModel
    from edgekit.variants import ModelVariant


@dataclass(frozen=True)
class Prepared:
    """The model, its data split and its FP32 facts: what every candidate is built from and judged against.

    ``compression``: what ``[prune]`` / ``[distill]`` did to the model as given.
    ``variants``: the model as given (``variants.BASE``) and the compressed
    variants searched targets asked for; ``variant_errors`` those that could
    not be made. ``classes``: whether the first output is judged as class
    scores. ``reference_metrics``: FP32 accuracy (and before compression).
    ``attacks``: the suite crafted on the model as given, which every
    candidate runs (None when ``[attacks] enabled = false``).
    """

    stem: str
    model: LoadedModel
    compression: tuple[dict[str, Any], ...]
    split: Split
    base: ModelVariant
    variants: Mapping[str, ModelVariant]
    variant_errors: Mapping[str, str]
    output_names: tuple[str, ...]
    input_specs: tuple[backends.TensorSpec, ...]
    classes: bool
    reference_metrics: Mapping[str, float]
    attacks: AttackSuite | None = None

    def fidelity_target(self, profile: TargetProfile, precision: str) -> FidelityTarget:
        """The quality bar a backend searches against for ``precision`` on ``profile``."""
        budgets = profile.budgets_for(precision)
        return FidelityTarget(budgets.min_cosine, budgets.min_top1_agreement if self.classes else None,
                              budgets.min_sqnr_db)


def _load_model(config: BuildConfig) -> tuple[LoadedModel, str]:
    from edgekit import model as model_loading

    section = config.model
    if section.factory:
        model = model_loading.load_factory(section.factory, config.resolve(section.weights), config.base_dir)
    else:
        model = model_loading.load_file(config.resolve(section.path), section.trust_pickle)  # type: ignore[arg-type]
    stem = section.name or (Path(section.path).stem if section.path else section.factory.rsplit(":", 1)[-1])  # type: ignore[union-attr]
    return model, stem


def _load_data(inputs: BuildInputs, model: LoadedModel) -> tuple[Dataset, bool]:
    """The evaluation data bound to the model's inputs, and whether its first output is judged as classes."""
    data_section = inputs.config.data
    assert data_section is not None
    dataset = bind_inputs(load_npz(inputs.data_path), list(model.input_names), str(inputs.data_path))
    if data_section.task == "classification" and dataset.y is not None and not dataset.labelled:
        raise DataError(f"{inputs.data_path} has 'y' of dtype {dataset.y.dtype}, not integer class labels",
                        "Store integer labels as 'y', or set [data] task = 'regression'")
    # Top-1 agreement is judged where the first output is known to be class scores: labels say so, or
    # task = "classification" does for unlabelled data (an image classifier checked on unlabelled photos).
    return dataset, dataset.labelled or data_section.task == "classification"


def _check_outputs(inputs: BuildInputs, model: LoadedModel, base: ModelVariant, dataset: Dataset) -> tuple[str, ...]:
    """The output names, after checking them and the labels against what the model returns."""
    section = inputs.config.model
    names = tuple(section.outputs) if section.outputs else (model.output_names or base.default_output_names)
    if len(names) != len(base.reference):
        raise InputError(f"model.outputs names {len(names)} output(s) but the model returns {len(base.reference)}",
                         "List one name per returned tensor, in order")
    if dataset.labelled and base.reference[0].ndim >= 2:
        classes = int(np.prod(base.reference[0].shape[1:]))
        if int(dataset.y.max()) >= classes:  # type: ignore[union-attr]
            first = int(np.flatnonzero(dataset.y >= classes)[0])  # type: ignore[operator]
            raise DataError(f"{inputs.data_path}: label 'y' of sample {first} is {int(dataset.y[first])}, but "  # type: ignore[index]
                            f"the model's first output has {classes} class scores",
                            "Labels must index the first output's classes (0 .. classes-1); check 'y' and the model")
    return names


def _reference_metrics(base: ModelVariant, uncompressed: LoadedModel | None, data: Split) -> dict[str, float]:
    """FP32 accuracy; with compression, also the accuracy before it (recorded apart from the budgets)."""
    if base.accuracy is None:
        return {}
    metrics = {"accuracy": base.accuracy}
    if uncompressed is not None:
        from edgekit.model import run_reference
        from edgekit.validate import accuracy

        before, _ = run_reference(uncompressed, data.evaluation)
        metrics["uncompressed_accuracy"] = accuracy(before, data.evaluation.y)  # type: ignore[arg-type]
    return metrics


def _search_variants(inputs: BuildInputs, base: ModelVariant, data: Split, reporter: Reporter,
                     cache: Any) -> tuple[dict[str, ModelVariant], dict[str, str]]:
    """Train the compressed variants the searched targets ask for (each once, shared by targets)."""
    from edgekit.variants import wanted_specs

    specs = wanted_specs([p.search for p in inputs.targets if searched(p)])  # type: ignore[misc]
    if not specs:
        return {}, {}
    from edgekit.compress.stage import ReporterProgress, load_training_data
    from edgekit.variants import compressed_variants

    config = inputs.config
    train_path = config.resolve(config.data.train if config.data else None)
    assert train_path is not None  # resolve_inputs refused searches with variants but no training data
    reporter.step(f"training {len(specs)} compressed variant(s) for the search")
    # The compression stages already refuse a variant whose outputs differ from the model's.
    made, failed = compressed_variants(base, specs, load_training_data(base.model, train_path), data,
                                       config.base_dir, ReporterProgress(reporter),
                                       compress=functools.partial(compress_cached, cache))
    for name, why in failed.items():
        reporter.note(f"search variant {name} left out: {why}")
    return made, failed


def craft_attacks(inputs: BuildInputs, model: LoadedModel, data: Split, classes: bool, macs: int,
                  reporter: Reporter) -> AttackSuite | None:
    """The attack suite on the FP32 model as given (``[attacks]``), with training samples as members."""
    config = inputs.config
    if not config.attacks.enabled:
        return None
    from edgekit.attacks.craft import craft_suite

    train_path = config.resolve(config.data.train if config.data else None)
    train = bind_inputs(load_npz(train_path), list(model.input_names), str(train_path)) if train_path else None
    reporter.step("crafting attacks on the FP32 torch model")
    return craft_suite(model, data, train, config.attacks, classes, macs)


def prepare(inputs: BuildInputs, reporter: Reporter, variants: bool = True, cache: Any = None) -> Prepared:
    """Everything the build needs before converting; raises InputError / DataError for what does not fit.

    ``variants=False`` leaves out the search's compressed variants (an audit of an existing build needs
    only the model as given). ``cache`` (``edgekit.cache``) keeps the models the build trains; None keeps none.
    """
    from edgekit.cache import NullCache

    cache = cache if cache is not None else NullCache()
    config = inputs.config
    reporter.step("loading model")
    model, stem = _load_model(config)
    uncompressed, compression = None, []
    if config.prune is not None or config.distill is not None:
        from edgekit.compress.stage import ReporterProgress, load_training_data

        train_path = config.resolve(config.data.train if config.data else None)
        assert train_path is not None  # resolve_inputs refused configs without it
        reporter.step("compressing the model")
        uncompressed = model
        model, compression = compress_cached(cache, model, load_training_data(model, train_path), prune=config.prune,
                                             distill=config.distill, base_dir=config.base_dir,
                                             progress=ReporterProgress(reporter))
    reporter.step("loading data")
    dataset, classes = _load_data(inputs, model)
    data_section = config.data
    assert data_section is not None
    data = split(dataset, data_section.calibration_size, data_section.eval_size, data_section.seed)
    reporter.step("running the FP32 torch reference")
    from edgekit.variants import BASE, make_variant

    base = make_variant(BASE, model, data, compression, count=functools.partial(macs_cached, cache, model))
    output_names = _check_outputs(inputs, model, base, dataset)
    input_specs = tuple(
        backends.TensorSpec(name, (model.fixed_batch, *arr.shape[1:]),
                            str(arr.dtype if arr.dtype != np.float64 else np.float32))
        for name, arr in data.calibration.inputs.items()
    )
    reference_metrics = _reference_metrics(base, uncompressed, data)
    attacks = craft_attacks(inputs, model, data, classes, base.macs, reporter)
    made, failed = _search_variants(inputs, base, data, reporter, cache) if variants else ({}, {})
    return Prepared(stem, model, tuple(compression), data, base, MappingProxyType({BASE: base, **made}),
                    MappingProxyType(failed), output_names, input_specs, classes, MappingProxyType(reference_metrics),
                    attacks)
