"""`edgekit fleet build`: many models × their targets in one run (see ``edgekit.fleet`` and docs/fleet.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekit.commands.execution import execution, execution_options
from edgekit.commands.output import console, emit_json, progress_reporter


@click.group()
def fleet() -> None:
    """Build many models for many device profiles (a fleet file)."""


@fleet.command("build")
@click.argument("fleet_toml", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Fleet output folder (over the file's output); each model builds into OUT/<name>/.")
@click.option("--json", "as_json", is_flag=True, help="Print fleet.json as JSON.")
@execution_options
def build(
    fleet_toml: Path,
    output: Path | None,
    as_json: bool,
    cache_dir: Path | None,
    no_cache: bool,
    executor: str | None,
    address: str | None,
    workers: int | None,
) -> None:
    """Build every model of FLEET_TOML for its targets, one model after another.

    Each model's candidate sets run in parallel on the executor (--executor
    local, serial or ray) and all models share the cache (--cache,
    --no-cache). A model that fails is recorded and the others go on;
    OUT/fleet.json says per model what was built, what passed and what came
    from the cache. The exit code is the worst model's.
    """
    from edgekit.fleet import fleet_build, load_fleet

    plan = load_fleet(fleet_toml, output)  # every entry, config and target checked before Ray or a pool starts
    with execution(cache_dir, no_cache, executor, address, workers) as (cache, runner), \
            progress_reporter(as_json) as reporter:
        result = fleet_build(plan, cache, runner, reporter)
    if as_json:
        emit_json(result.log)
    else:
        console().print(fleet_table(result.log))
        console().print(f"fleet: {result.log_path}")
    _exit_for(result.log)


def fleet_table(log: dict[str, Any]) -> Any:
    """One row per model × target: status, artifacts passed of those shipped, failed budgets; a failed model's error."""
    from rich.table import Table

    executor = log["executor"]
    table = Table(title=f"fleet: {len(log['models'])} models on the {executor['name']} executor "
                        f"({executor['workers']} at once), {log['seconds']:.0f} s")
    for column in ("model", "target", "status", "passed", "failed budgets / error", "sets cached/built"):
        table.add_column(column, justify="right" if column in ("passed", "sets cached/built") else "left")
    for model in log["models"]:
        sets = model["candidate_sets"]
        origin = f"{sets['from_cache']}/{sets['built']}"
        if not model["targets"]:
            table.add_row(model["name"], "—", f"[red]error {model['exit_code']}[/]", "", model["error"] or "", "")
        for row, target in enumerate(model["targets"]):
            status = "[green]passed[/]" if target["status"] == "passed" else f"[yellow]{target['status']}[/]"
            table.add_row(model["name"] if row == 0 else "", target["name"], status,
                          f"{target['passed']}/{target['artifacts']}", ", ".join(target["failed_budgets"]) or "—",
                          origin if row == 0 else "")
    return table


def _exit_for(log: dict[str, Any]) -> None:
    """Raise the error of the worst model's exit code, marked as reported (the table or JSON is already out)."""
    from edgekit.errors import EXIT_BAD_INPUT, EXIT_BUDGET_FAILED, EXIT_OK, BudgetError, InputError, InternalError

    code = log["exit_code"]
    if code == EXIT_OK:
        return
    worst = [m["name"] for m in log["models"] if m["exit_code"] == code]
    names = ", ".join(worst)
    error: Exception
    if code == EXIT_BUDGET_FAILED:
        error = BudgetError(f"artifacts of {names} miss their targets' budgets", "See the summary or fleet.json")
    elif code == EXIT_BAD_INPUT:
        error = InputError(f"{len(worst)} of {len(log['models'])} models could not be built ({names})",
                           "See each model's error in the summary or fleet.json")
    else:
        error = InternalError(f"{len(worst)} of {len(log['models'])} models failed inside edgekit or a converter "
                              f"({names})", "See each model's error in fleet.json; rerun that model's `edgekit build` "
                              "with --debug for the traceback and report it")
    error.reported = True  # type: ignore[attr-defined]
    raise error


COMMANDS = [fleet]
