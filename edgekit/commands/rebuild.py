"""`edgekit rebuild`: make a manifest's artifacts again from their recorded inputs and recipes, and compare hashes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgekit.commands.output import console, emit_json, progress_reporter
from edgekit.errors import BudgetError, InputError


def _table(results: list[Any]) -> Any:
    from rich.table import Table

    table = Table(title="rebuilt from the recorded inputs and recipes")
    for column in ("target", "artifact", "recorded sha256", "rebuilt sha256", "", "cause"):
        table.add_column(column)
    for result in results:
        firmware = [f"{Path(name).name} {verdict}" for name, verdict in result.firmware.items() if verdict != "same"]
        table.add_row(result.target, result.path, result.recorded[:12], (result.rebuilt or "—")[:12],
                      "[green]same[/]" if result.same else "[red]differs[/]",
                      "; ".join(result.causes + firmware))
    return table


@click.command("rebuild")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("config_or_model")
@click.option("--target", "-t", "targets", multiple=True,
              help="Profile (name or .toml) of a target the build used; default: the config's, else the manifest's names.")
@click.option("--data", type=click.Path(path_type=Path), help="The build's data (.npz), when CONFIG_OR_MODEL is a model.")
@click.option("--train", type=click.Path(path_type=Path), help="The training data the build's variants were trained on.")
@click.option("--weights", type=click.Path(path_type=Path), help="Weights for a module:factory model.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a pickled model (runs code from the file).")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Keep the rebuilt files here (default: discarded).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def rebuild(manifest: Path, config_or_model: str, targets: tuple[str, ...], data: Path | None, train: Path | None,
            weights: Path | None, trust_pickle: bool, output: Path | None, as_json: bool) -> None:
    """Rebuild MANIFEST's artifacts and report every sha256 that differs, with its cause.

    CONFIG_OR_MODEL is what the build was made from. Each artifact's recorded
    recipe is built again (no ranking on this host, no cache); a difference is
    explained by the input, tool version or profile that changed, where the
    records tell. Exit 0 when every hash matches, 1 when one differs.
    """
    from edgekit.commands.build import _config_from_source, with_data
    from edgekit.pipeline import resolve_inputs
    from edgekit.rebuild import check_manifest, rebuild as rebuild_all

    try:
        document = check_manifest(json.loads(manifest.read_text(encoding="utf-8")), manifest)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {manifest}: {exc}", "Give the manifest.json a build wrote") from None
    config = with_data(_config_from_source(config_or_model, trust_pickle, weights), data, train)
    names = list(targets) or config.build.targets or [t["name"] for t in document.get("targets") or []]
    inputs = resolve_inputs(config, names, data, output or manifest.parent)
    with progress_reporter(as_json) as reporter:
        results = rebuild_all(document, inputs, reporter, keep=output)
    if as_json:
        emit_json({"manifest": str(manifest), "artifacts": [r.as_dict() for r in results],
                   "differs": sum(not r.same for r in results)})
    else:
        console().print(_table(results))
    different = [r for r in results if not r.same]
    if different:
        raise BudgetError(f"{len(different)} of {len(results)} artifact(s) rebuilt to other bytes",
                          "See each one's cause above")
    if not as_json:
        console().print(f"all {len(results)} artifact(s) rebuilt to the recorded sha256")


COMMANDS = [rebuild]
