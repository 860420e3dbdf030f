"""`edgekit build`, `edgekit validate` and `edgekit demo`."""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any

import click

from edgekit.errors import EXIT_OK, BudgetError
from edgekit.commands.execution import execution, execution_options
from edgekit.commands.output import console, emit_json, progress_reporter, summary_table
from edgekit.commands.remote_options import remote_options
from edgekit.emulation.devices import DEVICES


def _config_from_source(source: str, trust_pickle: bool, factory_weights: Path | None) -> Any:
    """A BuildConfig from CONFIG_OR_MODEL: an edgekit.toml, a model file, or module:factory."""
    from edgekit.config import build_config_from

    return build_config_from(source, trust_pickle, factory_weights)[0]


@click.command()
@click.argument("config_or_model")
@click.option("--data", type=click.Path(path_type=Path), help="Calibration/evaluation data (.npz).")
@click.option("--target", "-t", "targets", multiple=True, help="Target profile name or .toml path (repeatable).")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Output folder.")
@click.option("--weights", type=click.Path(path_type=Path), help="Weights for a module:factory model.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a pickled model (runs code from the file).")
@click.option("--latency-on-host", is_flag=True, help="Check latency/RAM budgets on this host (building on the device).")
@click.option("--auto", is_flag=True,
              help="Search each target's [search] space (precisions, compressed variants) for the best artifact per format.")
@click.option("--keep-work", is_flag=True, help="Keep intermediate candidates in OUT/.work.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@execution_options
def build(
    config_or_model: str,
    data: Path | None,
    targets: tuple[str, ...],
    output: Path | None,
    weights: Path | None,
    trust_pickle: bool,
    latency_on_host: bool,
    auto: bool,
    keep_work: bool,
    as_json: bool,
    cache_dir: Path | None,
    no_cache: bool,
    executor: str | None,
    address: str | None,
    workers: int | None,
) -> None:
    """Build, validate and describe artifacts for each target.

    CONFIG_OR_MODEL is an edgekit.toml, a model file (.pt2, TorchScript), or
    module:factory (with --weights). Flags override the config file. Results
    are kept in a cache by content (--cache, --no-cache); candidates are built
    in parallel (--executor, --workers). OUT/build.json says what came from the cache.
    """
    with execution(cache_dir, no_cache, executor, address, workers) as (cache, runner):
        result = run_build(config_or_model, data, list(targets), output, weights, trust_pickle, latency_on_host,
                           keep_work, as_json, auto=auto, cache=cache, executor=runner)
    _finish(result, as_json)


def with_data(config: Any, data: Path | None, train: Path | None = None) -> Any:
    """The config with ``--data`` (and ``--train``) over its [data] path (and train), its other settings kept."""
    from edgekit.config import DataSection

    update = {"path": str(data.resolve())} if data is not None else {}
    if train is not None:
        update["train"] = str(train.resolve())
    if not update:
        return config
    if config.data is None and "path" not in update:
        return config  # --train alone: the missing data path is reported where data is needed
    section = config.data.model_copy(update=update) if config.data else DataSection(**update)
    return config.model_copy(update={"data": section})


def run_build(
    source: str,
    data: Path | None,
    targets: list[str],
    output: Path | None,
    weights: Path | None = None,
    trust_pickle: bool = False,
    latency_on_host: bool = False,
    keep_work: bool = False,
    quiet: bool = False,
    auto: bool = False,
    cache: Any = None,
    executor: Any = None,
) -> Any:
    from edgekit.pipeline import Build, resolve_inputs

    config = with_data(_config_from_source(source, trust_pickle, weights), data)
    if latency_on_host:
        config = config.model_copy(update={"build": config.build.model_copy(update={"latency_on_host": True})})
    inputs = resolve_inputs(config, targets, data, output, auto=auto)
    with progress_reporter(quiet) as reporter:
        return Build(inputs, reporter, keep_work=keep_work, cache=cache, executor=executor).run()


def print_origins(output: Path) -> None:
    """One line on where the candidate sets came from (OUT/build.json), when the build wrote it."""
    try:
        log = json.loads((output / "build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    root = log["cache"]["root"]
    console().print(f"candidate sets: {log['from_cache']} from the cache{f' ({root})' if root else ''}, "
                    f"{log['built']} built on the {log['executor']['name']} executor "
                    f"({log['executor']['workers']} at once)")


def _finish(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json(result.manifest)
    else:
        console().print(summary_table(result.manifest))
        for target in result.manifest["targets"]:
            for message in target["messages"]:
                console().print(f"[yellow]{target['name']}[/]: {message}")
        console().print(f"manifest: {result.output / 'manifest.json'}")
        print_origins(result.output)
    code = result.exit_code
    if code == 1:
        raise BudgetError("at least one artifact misses its target's budgets", "See the checks in the summary or manifest")
    if code != EXIT_OK:
        sys.exit(code)


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Evaluation data (.npz).")
@click.option("--target", "-t", "target",
              help="Profile whose budgets to check (name or .toml); with --manifest, which of the artifact's entries.")
@click.option("--manifest", type=click.Path(path_type=Path),
              help="The build's manifest.json: check the budgets and FP32 accuracy it recorded for this artifact "
                   "(found by sha256; a changed file is refused).")
@click.option("--reference", type=click.Path(path_type=Path), help="Baseline artifact (e.g. the FP32 one) to compare with.")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=1), help="Timed runs for latency.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--emulate", type=click.Choice(sorted(DEVICES)),
              help="Also run the artifact on an emulated Raspberry Pi (arm64 under QEMU, its own aarch64 runtime) and "
                   "compare the outputs with this host's on the same samples; exit 1 when they differ.")
@click.option("--install-tools", is_flag=True, help="With --emulate: apt-get install QEMU and debootstrap when missing (root).")
@remote_options
def validate(artifact: Path, data: Path, target: str | None, reference: Path | None, runs: int, as_json: bool,
             manifest: Path | None = None, remote: Any = None, emulate: str | None = None,
             install_tools: bool = False) -> None:
    """Validate one artifact in its own runtime (no torch needed).

    Run on the device, this measures the device's own latency and checks the
    target's latency and RAM budgets for real; on a host of another
    architecture (or for an emulated format) those checks are skipped with a
    note, as in `build`. With --manifest, the target, budgets and FP32
    accuracy come from the build's manifest; with --remote ssh://user@host it
    all runs on that device and the report prints here.
    """
    if remote is not None:
        _validate_on_device(remote, artifact, data, target, manifest, reference, runs, as_json)
        return
    from edgekit.backends import open_session
    from edgekit.config import Precision, load_profile
    from edgekit.data import bind_inputs, load_npz
    from edgekit.machine import same_arch
    from edgekit.artifact import CandidateFacts
    from edgekit.validate import check_budgets, evaluate, measure_latency, peak_rss_mb, run_batched, verdict
    from edgekit.artifact import size_bytes

    entry = _manifest_entry(manifest, artifact, target)  # before any work: a changed file is refused at once
    session = open_session(artifact)
    dataset = bind_inputs(load_npz(data), [s.name for s in session.inputs], str(data))
    recorded = _build_report(artifact)
    baseline = None
    # Without a reference artifact, the FP32 accuracy the build measured stands in for the accuracy drop.
    baseline_accuracy = recorded.get("reference", {}).get("accuracy") if dataset.labelled else None
    if entry is not None and dataset.labelled and entry.reference_accuracy is not None:
        baseline_accuracy = entry.reference_accuracy
    if reference is not None:
        baseline = run_batched(open_session(reference), dataset)
        if dataset.labelled:
            from edgekit.validate import accuracy

            baseline_accuracy = accuracy(baseline, dataset.y)  # type: ignore[arg-type]
    metrics = evaluate(session, dataset, baseline, baseline_accuracy)
    if not getattr(session, "emulated", False):  # an emulator's speed is not the device's
        metrics.update(measure_latency(session, {k: v[:1] for k, v in dataset.inputs.items()}, runs))
    metrics["peak_rss_mb"] = peak_rss_mb(session)  # the process that ran the model, in MiB
    report: dict[str, Any] = {"artifact": str(artifact), "size_bytes": size_bytes(artifact), "metrics": metrics}
    passed = True
    if target or entry:
        if entry is not None:
            from edgekit.manifest_entry import budgets_of

            budgets, name, arch = budgets_of(entry), entry.target, _profile_arch(target or entry.target)
            details = {**entry.facts, **_build_details(artifact)}
            report["manifest"] = entry.as_dict()
        else:
            profile = load_profile(target)  # type: ignore[arg-type]
            precision = recorded.get("precision")
            known = typing.get_args(Precision)
            budgets = profile.budgets_for(precision) if precision in known else profile.budgets
            name, arch, details = profile.name, profile.device.arch, _build_details(artifact)
        # A host of another instruction set is not the device: its latency and RAM say nothing
        # certain about the target, and an emulator's say nothing at all (as in `build`). A profile
        # this machine lacks (a custom one named in the manifest) says no arch, so nothing proves this
        # is the device: those checks are skipped; -t PATH/TO/profile.toml names the arch.
        on_device = arch is not None and same_arch(arch) and not getattr(session, "emulated", False)
        checks = check_budgets(metrics, budgets, report["size_bytes"], CandidateFacts.read(details, artifact.name),
                               device_measured=on_device, device_name=name, classes=dataset.labelled)
        report["target"] = name
        report["measured_on_device"] = on_device
        report["checks"] = [c.as_dict() for c in checks]
        passed = verdict(checks)
        report["passed"] = passed
    if emulate:  # the same samples in the emulated Pi's own runtime, compared with this host's outputs
        report["emulation"] = _emulate(artifact, session, dataset.inputs, recorded.get("precision"), emulate, install_tools)
    _print_validation(report, as_json)
    _emulation_verdict(report, artifact)
    if not passed:
        raise BudgetError(f"{artifact.name} misses the budgets of {report['target']}", "See the failed checks above")


def _print_validation(report: dict[str, Any], as_json: bool) -> None:
    """A validate report: the JSON document, or a metrics table and one line per check."""
    if as_json:
        emit_json(report)
        return
    from rich.table import Table

    table = Table(title=f"{Path(report['artifact']).name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in report["metrics"].items():
        table.add_row(key, f"{value:.6g}")
    console().print(table)
    if "manifest" in report:
        source = report["manifest"]
        console().print(f"budgets of {source['target']} from {source['file']} (sha256 {source['sha256'][:12]}... matches)")
    if "remote" in report:
        console().print(f"measured on {report['remote']['url']} with {report['remote']['python']}")
    for check in report.get("checks", []):
        console().print(f"{check['budget']}: {check['status']} (value {check['value']}, limit {check['limit']}) {check['note']}")
    if "emulation" in report:
        from edgekit.emulation.check import describe

        console().print(describe(report["emulation"]))


def _emulate(artifact: Path, session: Any, inputs: dict[str, Any], precision: str | None, device: str,
             install_tools: bool) -> dict[str, Any]:
    """The --emulate record (``edgekit.emulation.check_artifact``), the host run made on the same samples."""
    from edgekit.emulation.check import check_validated_session

    return check_validated_session(artifact, session, inputs, device, precision, install_tools)


def _emulation_verdict(report: dict[str, Any], artifact: Path) -> None:
    """Exit 1, once the report is printed, when the emulated device computed other outputs than this host."""
    record = report.get("emulation")
    if record is not None and record["status"] != "pass":
        raise BudgetError(f"{artifact.name} gives other outputs on the {record['validated_on']} than on this host: "
                          f"{record['message']}", "See the emulation record above (docs/emulation.md)")


def _manifest_entry(manifest: Path | None, artifact: Path, target: str | None) -> Any:
    """The artifact's entry in ``manifest`` (``edgekit.manifest_entry``), picked by ``target`` (a name or .toml)."""
    if manifest is None:
        return None
    from edgekit.manifest_entry import find_entry

    name = target
    if target is not None and (target.endswith(".toml") or Path(target).is_file()):
        from edgekit.config import load_profile

        name = load_profile(target).name
    return find_entry(manifest, artifact, name)


def _profile_arch(target: str) -> str | None:
    """The device arch of a profile (name or .toml), or None when this machine does not have that profile."""
    from edgekit.config import load_profile
    from edgekit.errors import TargetNotFoundError

    try:
        return load_profile(target).device.arch
    except TargetNotFoundError:
        return None


def _validate_on_device(remote: Any, artifact: Path, data: Path, target: str | None, manifest: Path | None,
                        reference: Path | None, runs: int, as_json: bool) -> None:
    """``validate --remote``: the same validation on the device (inputs copied there), printed here."""
    from rich.console import Console

    from edgekit.commands.remote_options import validate_on_device

    profile_file = Path(target) if target and (target.endswith(".toml") or Path(target).is_file()) else None
    options = ["--runs", str(runs), *(["--target", target] if target and profile_file is None else [])]
    files = {"--manifest": manifest, "--reference": reference, "--target": profile_file}
    with Console(stderr=True).status("validating") as status:
        report, code = validate_on_device(remote, artifact, data, options, files, status.update)
    _print_validation(report, as_json)
    if code != EXIT_OK or report.get("passed") is False:
        raise BudgetError(f"{artifact.name} misses the budgets of {report.get('target')} on {remote.target}",
                          "See the failed checks above")


def _build_report(artifact: Path) -> dict[str, Any]:
    """The report `edgekit build` wrote beside the artifact (``<artifact>.report.json``), or {} without one.

    It carries facts the checks need that the artifact alone does not state:
    its precision (whose quality bar applies), the FP32 accuracy, the tensor
    arena, the float-agreement precision. An artifact copied without its
    report is checked without them.
    """
    try:
        report = json.loads(Path(f"{artifact}.report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _build_details(artifact: Path) -> dict[str, Any]:
    """The backend details of the build's report (see ``_build_report``)."""
    details = _build_report(artifact).get("details")
    return details if isinstance(details, dict) else {}


COMMANDS = [build, validate]
