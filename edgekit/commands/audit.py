"""Audit commands: verify the prediction audit log's hash chain, and find which release made a decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

LOG_ARGUMENT = click.argument("log", metavar="LOG", type=click.Path(dir_okay=False, path_type=Path))


@click.group()
def audit() -> None:
    """Check and search the prediction audit log the device runtime writes."""


@audit.command()
@LOG_ARGUMENT
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(log: Path, as_json: bool) -> None:
    """Recheck every record's hash and the chain across rotated files (exit 1 if anything was removed or edited).

    A chain without a key proves the log is consistent with itself and its
    head file; keep the head's hash elsewhere to catch a rewrite of both.
    """
    from edgekit.commands.keyfiles import emit
    from edgekit.errors import DeviceCheckError
    from edgekit.runtime.audit import verify as verify_log

    result = verify_log(log)
    span = "no records" if result.first_seq is None else f"seq {result.first_seq}..{result.last_seq}"
    lines = [f"{log}: {result.records} record(s), {span}, {len(result.files)} file(s)"]
    lines += [f"  file {name}" for name in result.files]
    lines += [f"  note: {note}" for note in result.notes]
    lines += [f"  FAIL {problem}" for problem in result.problems]
    lines.append("chain intact" if result.ok else f"chain broken: {len(result.problems)} problem(s)")
    emit(as_json, result.as_dict(), lines)
    if not result.ok:
        raise DeviceCheckError(f"the audit log {log} fails verification ({len(result.problems)} problem(s))",
                               "Records were removed, edited or reordered, or a write was torn; see the problems "
                               "above (file:line and seq)", reported=True)


@audit.command()
@LOG_ARGUMENT
@click.option("--input-digest", metavar="HEX", help="Only records for this input digest (a prefix is enough).")
@click.option("--since", metavar="TIME", help="Only records at or after TIME (2026-12-03 or 2026-12-03T01:02:03Z).")
@click.option("--until", metavar="TIME", help="Only records at or before TIME (a date includes that whole day).")
@click.option("--json", "as_json", is_flag=True, help="Print the matching records as a JSON array.")
def find(log: Path, input_digest: str | None, since: str | None, until: str | None, as_json: bool) -> None:
    """Which release made a decision: the records matching every filter, oldest first."""
    from edgekit.runtime.audit import find as find_records

    matches = list(find_records(log, input_digest=input_digest, since=since, until=until))
    if as_json:
        click.echo(json.dumps(matches, indent=2, sort_keys=True))
    elif not matches:
        click.echo("no record matches")
    else:
        _print_table(matches)


def _print_table(records: list[dict[str, Any]]) -> None:
    """One row per record: when, which arm, and exactly which model, version, artifact and key decided."""
    from rich.table import Table

    from edgekit.commands.output import console

    table = Table(title=f"{len(records)} record(s)")
    for column in ("time", "seq", "arm", "model", "version", "artifact", "key id"):
        table.add_column(column, justify="right" if column == "seq" else "left", no_wrap=column != "model")
    for record in records:
        table.add_row(*(_text(record.get(name), width) for name, width in (
            ("time", 0), ("seq", 0), ("arm", 0), ("model", 0), ("version", 0), ("artifact_sha256", 12),
            ("key_id", 16))))
    console().print(table)


def _text(value: object, width: int) -> str:
    """A cell: empty for a missing field, hex digests cut to ``width`` characters."""
    if value is None:
        return ""
    text = str(value)
    return text[:width] if width else text


COMMANDS = [audit]
