"""`edgekit prune` and `edgekit distill`: compress a model in torch and write a folder `edgekit build` accepts.

Output folder OUT:
  weights.safetensors + edgekit.toml   architecture unchanged (unstructured pruning of a factory model,
                                       a factory student): the same factory with new weights
  model.pt2 + edgekit.toml             architecture changed (structured pruning, width-derived
                                       students) or a .pt2 source: torch.export, dynamic batch
  compression.json                     what was done and what it measured, before and after
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekit.commands.output import console, emit_json
from edgekit.errors import InputError


def _load_source(source: str, weights: Path | None, trust_pickle: bool) -> tuple[Any, dict[str, Any]]:
    """(BuildConfig, raw [prune]/[distill] tables) from an edgekit.toml, a model file or module:factory.

    The compression tables are set aside before the rest is validated, so the
    command's flags can be laid over them first.
    """
    from edgekit.config import build_config_from

    return build_config_from(source, trust_pickle, weights, set_aside=("prune", "distill"))


def _factory_spec(config: Any) -> str | None:
    """The model's factory, with a file path made absolute so the output folder can live anywhere."""
    spec = config.model.factory
    if spec is None:
        return None
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        return f"{config.resolve(target).resolve()}:{attr}"
    return spec


def _load(config: Any) -> Any:
    from edgekit.model import load_factory, load_file

    section = config.model
    if section.factory:
        return load_factory(section.factory, config.resolve(section.weights), config.base_dir)
    return load_file(config.resolve(section.path), section.trust_pickle)


def _data_paths(config: Any, train_data: Path | None, data: Path | None) -> tuple[Path, Path | None]:
    train = train_data or (config.resolve(config.data.train) if config.data else None)
    if train is None:
        raise InputError("no training data given",
                         "Pass --train-data TRAIN.npz (inputs plus labels 'y'), or set [data] train in the config")
    held_out = data or (config.resolve(config.data.path) if config.data else None)
    return train, held_out


def _options(table: dict[str, Any], **flags: Any) -> dict[str, Any]:
    """The config table with every flag the user gave laid over it."""
    merged = dict(table)
    merged.update({k: v for k, v in flags.items() if v is not None})
    return merged


class _RichProgress:
    """Training progress on stderr: one bar per training phase, the latest epoch's numbers as its text."""

    def __init__(self, quiet: bool) -> None:
        import sys

        self._progress = None
        if quiet or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._task: Any = None

    def __enter__(self) -> _RichProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, description: str, total: int) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, message: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, description=message)


def _print_report(report: dict[str, Any], output: Path, model_file: Path) -> None:
    from rich.table import Table

    first, second = ("before", "after") if report["stage"] == "prune" else ("teacher", "student_measured")
    table = Table(title=f"{report['stage']} — evaluated on {report['evaluated_on']}")
    table.add_column("")
    table.add_column(first if first != "before" else "original", justify="right")
    table.add_column("student" if second == "student_measured" else "compressed", justify="right")
    table.add_column("ratio", justify="right")
    rows = [("accuracy", "{:.4f}"), ("params", "{:,}"), ("nonzero_params", "{:,}"), ("weight_sparsity", "{:.3f}"),
            ("macs", "{:,}"), ("onnx_bytes", "{:,}"), ("onnx_gzip_bytes", "{:,}"), ("latency_ms", "{:.3f}")]
    a, b = report[first], report[second]
    for key, pattern in rows:
        if a.get(key) is None or b.get(key) is None:
            continue
        ratio = report["ratios"].get(key)
        table.add_row(key, pattern.format(a[key]), pattern.format(b[key]), "" if ratio is None else f"{ratio:.3f}×")
    console().print(table)
    if "labels_only" in report and "accuracy" in report["labels_only"]:
        console().print(f"same student trained on labels only: accuracy {report['labels_only']['accuracy']:.4f}")
    console().print(f"model: {model_file}  (build it with: edgekit build {output / 'edgekit.toml'} -t TARGET)")


def _data_section(train: Path, held_out: Path | None) -> dict[str, str]:
    """The output config's [data]: absolute paths, so the folder can be built from anywhere."""
    section = {"path": str(held_out.resolve())} if held_out else {}
    section["train"] = str(train.resolve())
    return section


@click.command()
@click.argument("config_or_model")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="Output folder (created or replaced).")
@click.option("--method", type=click.Choice(["unstructured", "structured"]), help="Zero weights, or remove channels.")
@click.option("--sparsity", type=float, help="Fraction in (0, 1): weights zeroed (unstructured) or channels removed (structured).")
@click.option("--macs-ratio", type=float, help="Structured: keep at most this fraction of the MACs (e.g. 0.5).")
@click.option("--round-to", type=int, help="Structured: keep channel counts multiples of this (8; 16 for AVX-512 hosts).")
@click.option("--global-ranking/--per-layer", "global_pruning", default=None,
              help="Structured: rank channels across layers, or within each layer (default).")
@click.option("--keep-residual-streams", is_flag=True, default=None,
              help="Structured: leave channels joined by residual adds whole; prune inside the blocks.")
@click.option("--augment-shift", type=int, help="Random pixel shift of image inputs during fine-tuning (0: off).")
@click.option("--train-data", type=click.Path(path_type=Path), help="Training data (.npz with labels y); default [data] train.")
@click.option("--data", type=click.Path(path_type=Path), help="Held-out data to report accuracy on; default [data] path.")
@click.option("--epochs", type=int, help="Fine-tuning epochs.")
@click.option("--lr", type=float, help="Fine-tuning learning rate.")
@click.option("--seed", type=int, help="Seed for the split, shuffling and augmentation.")
@click.option("--weights", type=click.Path(path_type=Path), help="Weights for a module:factory model.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a pickled model (runs code from the file).")
@click.option("--latency-runs", default=100, show_default=True, help="onnxruntime runs to time (0: skip latency).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def prune(config_or_model: str, output: Path, method: str | None, sparsity: float | None, macs_ratio: float | None,
          round_to: int | None, global_pruning: bool | None, keep_residual_streams: bool | None,
          augment_shift: int | None, train_data: Path | None, data: Path | None, epochs: int | None, lr: float | None, seed: int | None,
          weights: Path | None, trust_pickle: bool, latency_runs: int, as_json: bool) -> None:
    """Prune a model and fine-tune it on the training data.

    \b
    unstructured: global magnitude pruning to --sparsity on a gradual schedule;
                  writes the factory's new weights (zeros shrink the gzip'd ONNX, not the speed).
    structured:   removes channels/heads (Torch-Pruning, round_to 8) to --macs-ratio or
                  --sparsity; writes a torch.export model.pt2 (faster, smaller dense net).
    """
    from edgekit.compress.config import parse_prune

    config, sections = _load_source(config_or_model, weights, trust_pickle)
    options = parse_prune(_options(sections.get("prune", {}), method=method, sparsity=sparsity, macs_ratio=macs_ratio,
                                   round_to=round_to, global_pruning=global_pruning,
                                   keep_residual_streams=keep_residual_streams or None, augment_shift=augment_shift,
                                   epochs=epochs, lr=lr, seed=seed), config_or_model)
    train_path, held_out_path = _data_paths(config, train_data, data)

    from edgekit.compress.stage import load_training_data, prune_stage, save
    from edgekit.data import bind_inputs, load_npz

    model = _load(config)
    train = load_training_data(model, train_path)
    held_out = bind_inputs(load_npz(held_out_path), list(model.input_names), str(held_out_path)) if held_out_path else None
    with _RichProgress(as_json) as progress:
        result = prune_stage(model, train, options, factory=_factory_spec(config), evaluation=held_out,
                             progress=progress, latency_runs=latency_runs, source=str(train_path))
    model_file = save(result, output, name=config.model.name, data=_data_section(train_path, held_out_path),
                      targets=list(config.build.targets), version=config.model.version)
    if as_json:
        emit_json(result.report)
    else:
        _print_report(result.report, output, model_file)


@click.command()
@click.argument("config_or_model")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="Output folder (created or replaced).")
@click.option("--student", help="Student factory (module:function or file.py:function).")
@click.option("--student-weights", type=click.Path(path_type=Path), help="Initial weights for --student.")
@click.option("--width", type=float, help="Derive the student: keep this fraction of the teacher's channels.")
@click.option("--init", type=click.Choice(["teacher", "random"]), help="Width-derived student starts from the teacher's weights or random.")
@click.option("--temperature", type=float, help="Softmax temperature of the soft targets.")
@click.option("--alpha", type=float, help="Weight of the soft-target loss (1 - alpha for the labels).")
@click.option("--augment-shift", type=int, help="Random pixel shift of image inputs during training (0: off).")
@click.option("--train-data", type=click.Path(path_type=Path), help="Training data (.npz); default [data] train.")
@click.option("--data", type=click.Path(path_type=Path), help="Held-out data to report accuracy on; default [data] path.")
@click.option("--epochs", type=int, help="Training epochs (early stopping may end sooner).")
@click.option("--lr", type=float, help="Learning rate.")
@click.option("--seed", type=int, help="Seed for the split, initialisation, shuffling and augmentation.")
@click.option("--baseline", is_flag=True, help="Also train the same student on labels alone and report both.")
@click.option("--weights", type=click.Path(path_type=Path), help="Weights for a module:factory teacher.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a pickled teacher (runs code from the file).")
@click.option("--latency-runs", default=100, show_default=True, help="onnxruntime runs to time (0: skip latency).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def distill(config_or_model: str, output: Path, student: str | None, student_weights: Path | None, width: float | None,
            init: str | None, temperature: float | None, alpha: float | None, augment_shift: int | None,
            train_data: Path | None, data: Path | None, epochs: int | None, lr: float | None, seed: int | None,
            baseline: bool, weights: Path | None, trust_pickle: bool, latency_runs: int, as_json: bool) -> None:
    """Train a smaller student from the model (the teacher) with soft targets plus labels.

    The student is --student (a factory; writes its weights) or the teacher at
    --width of its channels (writes a torch.export model.pt2).
    """
    from edgekit.compress.config import parse_distill

    config, sections = _load_source(config_or_model, weights, trust_pickle)
    table = dict(sections.get("distill", {}))
    if student is not None or width is not None:  # a student on the command line replaces the config's
        for key in ("student", "width", "student_weights"):
            table.pop(key, None)
    options = parse_distill(_options(table, student=student, student_weights=str(student_weights) if student_weights else None,
                                     width=width, init=init, temperature=temperature, alpha=alpha,
                                     augment_shift=augment_shift, epochs=epochs, lr=lr, seed=seed), config_or_model)
    train_path, held_out_path = _data_paths(config, train_data, data)

    from edgekit.compress.stage import distill_stage, load_training_data, save
    from edgekit.data import bind_inputs, load_npz

    teacher = _load(config)
    train = load_training_data(teacher, train_path)
    held_out = bind_inputs(load_npz(held_out_path), list(teacher.input_names), str(held_out_path)) if held_out_path else None
    base_dir = Path.cwd() if student is not None else config.base_dir
    with _RichProgress(as_json) as progress:
        result = distill_stage(teacher, train, options, base_dir=base_dir, evaluation=held_out, progress=progress,
                               latency_runs=latency_runs, source=str(train_path), baseline=baseline)
    model_file = save(result, output, name=config.model.name, data=_data_section(train_path, held_out_path),
                      targets=list(config.build.targets), version=config.model.version)
    if as_json:
        emit_json(result.report)
    else:
        _print_report(result.report, output, model_file)


COMMANDS = [prune, distill]
