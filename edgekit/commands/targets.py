"""`edgekit targets`: list the shipped device profiles, or show one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from edgekit.commands.output import console, emit_json

if TYPE_CHECKING:
    from edgekit.config import TargetProfile


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def targets(ctx: click.Context, as_json: bool) -> None:
    """List target profiles (`edgekit targets show NAME` for one)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from edgekit.config import available_profiles, load_profile

    profiles = [load_profile(name) for name in available_profiles()]
    if as_json:
        emit_json([p.model_dump(mode="json", exclude={"source"}) for p in profiles])
        return
    table = Table(title="target profiles")
    for column in ("name", "device", "artifacts", "description"):
        table.add_column(column)
    for p in profiles:
        table.add_row(p.name, p.device.kind, ", ".join(a.label for a in p.artifacts), p.description)
    console().print(table)


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def show(name: str, as_json: bool) -> None:
    """Show one profile (a name, or a path to a .toml), validated."""
    from pathlib import Path

    from edgekit.config import load_profile

    profile = load_profile(name)
    if as_json:
        emit_json(profile.model_dump(mode="json", exclude={"source"}))
        return
    console().print(f"# {profile.source}", markup=False)
    console().print(Path(str(profile.source)).read_text(encoding="utf-8"), markup=False)
    console().print(_quality_comment(profile), markup=False)


QUALITY_KEYS = ("max_accuracy_drop", "min_cosine", "min_top1_agreement", "min_sqnr_db", "max_abs_error")


def _quality_comment(profile: TargetProfile) -> str:
    """The quality budgets each requested precision is held to, as TOML comments (the file stays valid TOML).

    Most profiles set none of these: the per-precision defaults apply, and a
    reader of the file alone would not see them.
    """
    lines = ["# Quality each artifact is held to against the FP32 model (defaults unless set above;",
             "# docs/fidelity.md). top-1 agreement is judged only for class scores, accuracy only with labels."]
    for precision in dict.fromkeys(a.precision for a in profile.artifacts):
        budgets = profile.budgets_for(precision)
        values = [f"{key} {getattr(budgets, key):g}" for key in QUALITY_KEYS if getattr(budgets, key) is not None]
        lines.append(f"#   {precision}: {', '.join(values)}")
    return "\n".join(lines)


COMMANDS = [targets]
