"""The compression stages end to end: checks, training, measurement and the output folder.

``prune_stage`` and ``distill_stage`` map a loaded model plus training data to
a :class:`Compressed` model; ``save`` writes it as a folder that
``edgekit build`` accepts:

- ``weights.safetensors`` + ``edgekit.toml`` naming the same factory, when the
  architecture is unchanged (unstructured pruning of a factory model, or a
  factory student);
- ``model.pt2`` (``torch.export`` with a dynamic batch axis) + ``edgekit.toml``
  when the architecture changed (structured pruning, width-derived students)
  or the source was itself a ``.pt2``;
- ``compression.json``: the report (what was done, measured before and after).

Every check that can fail on bad input runs before any training. The folder
is written atomically: an interrupted run leaves nothing behind. Imports torch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.artifact import atomic_path
from edgekit.compress.config import DistillConfig, PruneConfig
from edgekit.compress.train import (
    Inputs,
    Progress,
    TensorData,
    accuracy,
    eval_mode,
    seed_everything,
    split_train_val,
)
from edgekit.data import Dataset, bind_inputs, load_npz
from edgekit.errors import DataError, ModelLoadError
from edgekit.model import LoadedModel

REPORT_NAME = "compression.json"
CONFIG_NAME = "edgekit.toml"
WEIGHTS_NAME = "weights.safetensors"
PROGRAM_NAME = "model.pt2"


@dataclass
class Compressed:
    """A compressed model: the module, how to save it and the measured report."""

    module: nn.Module
    input_names: tuple[str, ...]
    example: Inputs  # batch 2, for torch.export with a dynamic batch
    factory: str | None  # set when the module is ``factory()`` with new weights
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def file_kind(self) -> str:
        return "factory+safetensors" if self.factory else "torch.export .pt2"


def load_training_data(model: LoadedModel, path: Path) -> Dataset:
    """The training data bound to the model's input names (refuses files that do not fit)."""
    return bind_inputs(load_npz(path), list(model.input_names), str(path))


def _trainable(model: LoadedModel, what: str) -> nn.Module:
    """The model's module if ``what`` (pruning, a width-derived student) can rewrite and train it."""
    if model.kind in ("torchscript", "exported"):
        form = "TorchScript" if model.kind == "torchscript" else "a torch.export program (its graph is frozen)"
        raise ModelLoadError(
            f"{model.description} is {form}, which {what} cannot modify",
            "Give the model as module:factory plus weights (a .pt2 can still be a distillation teacher "
            "for a --student factory)",
        )
    return model.module


def _require_labels(data: Dataset, source: str, why: str) -> None:
    if not data.labelled:
        found = "no 'y'" if data.y is None else f"'y' of dtype {data.y.dtype} (not integer class labels)"
        raise DataError(f"{source} has {found}, but {why} needs class labels", "Add integer labels 'y' to the .npz")


def _example(data: TensorData, count: int) -> Inputs:
    return tuple(t[:count].clone() for t in data.inputs)


def _check_runs(module: nn.Module, example: Inputs, source: str) -> None:
    """The data fits the model: one forward pass, before any training."""
    try:
        with torch.no_grad():
            eval_mode(module)(*example)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        shapes = ", ".join(f"{tuple(t.shape[1:])} {str(t.dtype).removeprefix('torch.')}" for t in example)
        raise DataError(f"the data in {source} does not fit the model (samples {shapes}): {first}",
                        "Give arrays with the shapes and dtypes the model's forward() expects") from None


def _measure(module: nn.Module, example1: Inputs, names: tuple[str, ...], evaluation: TensorData | None,
             latency_runs: int) -> dict[str, Any]:
    from edgekit.compress.measure import footprint, weight_sparsity

    facts, _ = footprint(module, example1, names, latency_runs)
    result = facts.as_dict()
    result["weight_sparsity"] = round(weight_sparsity(module), 4)
    if evaluation is not None and evaluation.y is not None:
        result["accuracy"] = round(accuracy(module, evaluation), 4)
    return result


def _summary(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    ratio: dict[str, Any] = {}
    for key in ("params", "nonzero_params", "macs", "onnx_bytes", "onnx_gzip_bytes", "latency_ms"):
        if before.get(key) and after.get(key) is not None:
            ratio[key] = round(after[key] / before[key], 4)
    if "accuracy" in before and "accuracy" in after:
        ratio["accuracy_drop"] = round(before["accuracy"] - after["accuracy"], 4)
    return ratio


def prune_stage(
    model: LoadedModel,
    train_data: Dataset,
    config: PruneConfig,
    *,
    factory: str | None = None,
    evaluation: Dataset | None = None,
    progress: Progress | None = None,
    latency_runs: int = 0,
    source: str = "the training data",
) -> Compressed:
    """Prune ``model`` (a copy; the input is never changed) and fine-tune it on ``train_data``.

    ``factory``: the model's ``module:function`` when it came from one; an
    unstructured result is then saved as new weights for that factory.
    ``evaluation``: held-out data to report accuracy on (else the validation split).
    """
    import copy

    from edgekit.compress.prune import prunable_layers, prune_unstructured
    from edgekit.compress.structured import make_pruner, prune_structured

    started = time.perf_counter()
    seed_everything(config.seed)
    module = copy.deepcopy(_trainable(model, "pruning"))
    _require_labels(train_data, source, "fine-tuning after pruning")
    data = TensorData.from_dataset(train_data, model.input_names)
    example1, example2 = _example(data, 1), _example(data, 2)
    _check_runs(module, example2, source)
    prunable_layers(module, config.ignore)  # no prunable layers: refuse before training
    if config.method == "structured":
        make_pruner(copy.deepcopy(module), example1, config, 0.1, 1)  # same, for channels (output layer excluded)
    train, val = split_train_val(data, config.val_fraction, config.seed)
    held_out = TensorData.from_dataset(evaluation, model.input_names) if evaluation is not None else val
    before = _measure(module, example1, model.input_names, held_out, latency_runs)

    if config.method == "unstructured":
        fit_result = prune_unstructured(module, train, val, config, progress)
        extra: dict[str, Any] = {}
        keep_factory = factory
    else:
        module, fit_result, ratios, applied = prune_structured(module, example1, train, val, config, progress)
        extra = {"channel_ratios": ratios, "ignored": applied.ignore}
        keep_factory = None
    after = _measure(module, example1, model.input_names, held_out, latency_runs)
    report = {
        "stage": "prune",
        "method": config.method,
        "config": config.model_dump(mode="json"),
        "source": model.description,
        "evaluated_on": "held-out data" if evaluation is not None else "validation split of the training data",
        "before": before,
        "after": after,
        "ratios": _summary(before, after),
        "training": {"best_epoch": fit_result.best_epoch, "epochs_run": fit_result.epochs_run,
                     "val_score": round(fit_result.val_score, 4), "seconds": round(time.perf_counter() - started, 1)},
        **extra,
    }
    return Compressed(eval_mode(module), model.input_names, example2, keep_factory, report)


def distill_stage(
    teacher: LoadedModel,
    train_data: Dataset,
    config: DistillConfig,
    *,
    base_dir: Path,
    evaluation: Dataset | None = None,
    progress: Progress | None = None,
    latency_runs: int = 0,
    source: str = "the training data",
    baseline: bool = False,
) -> Compressed:
    """Train a student from ``teacher`` on ``train_data``; ``baseline`` also trains it on labels alone to compare.

    All checks (labels, a student that fits the teacher's inputs and outputs)
    run before training starts.
    """
    import copy

    from edgekit.compress.distill import check_student, distill, factory_student, train_on_labels, width_student

    started = time.perf_counter()
    seed_everything(config.seed)
    teacher_module = teacher.module if config.student is not None else _trainable(teacher, "a width-derived student")
    if config.needs_labels:
        _require_labels(train_data, source, f"distillation with alpha = {config.alpha} (label loss weight > 0)")
    data = TensorData.from_dataset(train_data, teacher.input_names)
    example1, example2 = _example(data, 1), _example(data, 2)
    _check_runs(teacher_module, example2, source)
    if config.student is not None:
        student = factory_student(config, base_dir)
        name = config.student
    else:
        student = width_student(teacher_module, example1, config)
        name = f"(teacher at width {config.width})"
    check_student(student, teacher_module, example2, name)
    train, val = split_train_val(data, config.val_fraction, config.seed)
    held_out = TensorData.from_dataset(evaluation, teacher.input_names) if evaluation is not None else val
    teacher_facts = _measure(teacher_module, example1, teacher.input_names, held_out, latency_runs)
    initial = copy.deepcopy(student)

    fit_result = distill(student, copy.deepcopy(teacher_module), train, val, config, progress)
    student_facts = _measure(student, example1, teacher.input_names, held_out, latency_runs)
    report: dict[str, Any] = {
        "stage": "distill",
        "config": config.model_dump(mode="json"),
        "source": teacher.description,
        "student": name,
        "evaluated_on": "held-out data" if evaluation is not None else "validation split of the training data",
        "teacher": teacher_facts,
        "student_measured": student_facts,
        "ratios": _summary(teacher_facts, student_facts),
        "training": {"best_epoch": fit_result.best_epoch, "epochs_run": fit_result.epochs_run,
                     "val_score": round(fit_result.val_score, 4)},
    }
    if "accuracy" in teacher_facts and "accuracy" in student_facts and teacher_facts["accuracy"]:
        report["ratios"]["accuracy_of_teacher"] = round(student_facts["accuracy"] / teacher_facts["accuracy"], 4)
    if baseline and data.y is not None:
        seed_everything(config.seed)
        labels_only = initial
        base_fit = train_on_labels(labels_only, train, val, config, progress)
        report["labels_only"] = {"best_epoch": base_fit.best_epoch}
        if held_out.y is not None:
            report["labels_only"]["accuracy"] = round(accuracy(labels_only, held_out), 4)
    report["training"]["seconds"] = round(time.perf_counter() - started, 1)
    factory = config.student if config.student is not None else None
    if factory is not None and factory.rpartition(":")[0].endswith(".py"):
        target, _, attr = factory.rpartition(":")
        path = Path(target)
        factory = f"{(path if path.is_absolute() else base_dir / path).resolve()}:{attr}"
    return Compressed(eval_mode(student), teacher.input_names, example2, factory, report)


# ------------------------------------------------------------------ saving


def export_program(module: nn.Module, example: Inputs, destination: Path) -> None:
    """``torch.export`` ``module`` with a dynamic batch axis on every input and save it."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(eval_mode(module), example, dynamic_shapes=tuple({0: batch} for _ in example))
    torch.export.save(program, str(destination))


def save_weights(module: nn.Module, destination: Path) -> None:
    """The state_dict as safetensors (contiguous copies, as safetensors requires)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}, str(destination))


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def build_config_text(
    compressed: Compressed, name: str | None, data: dict[str, str], targets: list[str], version: str | None = None
) -> str:
    """The ``edgekit.toml`` beside the compressed model: ``edgekit build OUT/edgekit.toml`` builds it."""
    lines = ["# Written by edgekit compression; see compression.json for how this model was made.", "[model]"]
    if name:
        lines.append(f"name = {_toml_string(name)}")
    if version:
        lines.append(f"version = {_toml_string(version)}")
    if compressed.factory:
        lines += [f"factory = {_toml_string(compressed.factory)}", f"weights = {_toml_string(WEIGHTS_NAME)}"]
    else:
        lines.append(f"path = {_toml_string(PROGRAM_NAME)}")
    if data:
        lines += ["", "[data]"] + [f"{k} = {_toml_string(v)}" for k, v in data.items()]
    if targets:
        lines += ["", "[build]", "targets = [" + ", ".join(_toml_string(t) for t in targets) + "]"]
    return "\n".join(lines) + "\n"


def save(
    compressed: Compressed,
    output: Path,
    *,
    name: str | None = None,
    data: dict[str, str] | None = None,
    targets: list[str] | None = None,
    version: str | None = None,
) -> Path:
    """Write the output folder atomically (model file, edgekit.toml, compression.json); returns the model file."""
    from edgekit.errors import OutputError

    if output.exists() and not output.is_dir():
        raise OutputError(f"{output} exists and is not a folder", "Give -o a folder path (it is created or replaced)")
    compressed.report["output"] = {"kind": compressed.file_kind,
                                   "file": WEIGHTS_NAME if compressed.factory else PROGRAM_NAME}
    try:
        with atomic_path(output) as tmp:
            tmp.mkdir()
            if compressed.factory:
                save_weights(compressed.module, tmp / WEIGHTS_NAME)
            else:
                export_program(compressed.module, compressed.example, tmp / PROGRAM_NAME)
            (tmp / CONFIG_NAME).write_text(build_config_text(compressed, name, data or {}, targets or [], version))
            (tmp / REPORT_NAME).write_text(json.dumps(compressed.report, indent=2, sort_keys=True, default=_jsonable))
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}", "Choose a folder you can write to") from None
    return output / (WEIGHTS_NAME if compressed.factory else PROGRAM_NAME)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    return str(value)


class ReporterProgress:
    """Training progress shown through the build pipeline's Reporter (its ``step`` line)."""

    def __init__(self, reporter: Any) -> None:
        self._reporter = reporter

    def start(self, description: str, total: int) -> None:
        self._reporter.step(description)

    def advance(self, message: str) -> None:
        self._reporter.step(message)


def compress_for_build(
    model: LoadedModel,
    train_data: Dataset,
    *,
    prune: PruneConfig | None,
    distill: DistillConfig | None,
    base_dir: Path,
    progress: Progress | None = None,
) -> tuple[LoadedModel, list[dict[str, Any]]]:
    """The build pipeline's compression stage: distill (if asked), then prune (if asked).

    Returns the compressed model as a new ``LoadedModel`` (eval mode) plus the
    stage reports for the manifest; ``model`` itself is not changed.
    """
    import dataclasses
    import hashlib

    reports: list[dict[str, Any]] = []
    current = model
    if distill is not None:
        result = distill_stage(current, train_data, distill, base_dir=base_dir, progress=progress)
        reports.append(result.report)
        current = dataclasses.replace(current, module=result.module, kind="compressed",
                                      description=f"{current.description}, distilled")
    if prune is not None:
        result = prune_stage(current, train_data, prune, progress=progress)
        reports.append(result.report)
        current = dataclasses.replace(current, module=result.module, kind="compressed",
                                      description=f"{current.description}, pruned ({prune.method})")
    if current is not model:
        # Identify the compressed model by its source and its new weights (training is seeded).
        digest = hashlib.sha256(model.sha256.encode())
        for key, tensor in sorted(current.module.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().contiguous().numpy().tobytes())
        current = dataclasses.replace(current, sha256=digest.hexdigest())
    return current, reports
