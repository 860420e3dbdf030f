"""The ``edgekit`` command line: the only place errors become exit codes.

Commands live in ``edgekit/commands/<area>.py``, each module exposing
``COMMANDS: list[click.Command]``. They raise ``EdgekitError`` subclasses and
never call ``sys.exit`` themselves; ``main`` maps errors to messages and exit
codes (see ``edgekit.errors``). Command modules import only click and light
edgekit modules at top level, so ``edgekit --help`` stays fast.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import sys
from typing import Any, NoReturn

import click

from edgekit import __version__
from edgekit.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EdgekitError

# Order here is the order in `edgekit --help`.
COMMAND_MODULES = (
    "edgekit.commands.build",
    "edgekit.commands.fleet",
    "edgekit.commands.rebuild",
    "edgekit.commands.attacks",
    "edgekit.commands.demo",
    "edgekit.commands.inspect",
    "edgekit.commands.clib",
    "edgekit.commands.targets",
    "edgekit.commands.compress",
    "edgekit.commands.keys",
    "edgekit.commands.release",
    "edgekit.commands.runtime",
    "edgekit.commands.audit",
    "edgekit.commands.bench",
)


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # keep registration order, not alphabetical


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="edgekit")
@click.option("--debug", is_flag=True, envvar="EDGEKIT_DEBUG", help="Show tracebacks for internal failures.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """edgekit: build, validate, sign and benchmark edge models.

    \b
    Exit codes: 0 all budgets met, 1 a budget failed,
                2 usage or bad input, 3 internal failure.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # an area not built yet
            raise
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def _error(message: str, code: int, as_json: bool = False) -> None:
    """One ``error:`` line on stderr; with --json also ``{"ok": false, ...}`` on stdout, so a script sees it.

    Callers leave ``as_json`` off for budget failures: their command has already printed its JSON report.
    """
    click.echo(f"error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"ok": False, "exit_code": code, "error": message}))


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI and map errors to exit codes."""
    args = list(argv if argv is not None else sys.argv[1:])
    options_end = args.index("--") if "--" in args else len(args)  # after "--" it is an argument
    asked = "--debug" in args[:options_end]
    if asked:  # errors say "rerun with --debug": it works wherever it is typed, not only before the command
        args = ["--debug"] + [a for i, a in enumerate(args) if not (a == "--debug" and i < options_end)]
    debug = os.environ.get("EDGEKIT_DEBUG") == "1" or asked
    as_json = "--json" in args[:options_end]
    try:
        return cli.main(args=args, prog_name="edgekit", standalone_mode=False)
    except EdgekitError as exc:
        _error(exc.message, exc.exit_code, as_json and not exc.reported)
        if debug:
            raise
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _error("interrupted; nothing half-written was kept (rerun to finish)", 130, as_json)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        code = EXIT_BAD_INPUT if exc.exit_code == 2 else exc.exit_code
        if as_json:
            click.echo(json.dumps({"ok": False, "exit_code": code, "error": exc.format_message()}))
        sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _error("interrupted; nothing half-written was kept (rerun to finish)", 130, as_json)
        sys.exit(130)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            _internal(exc, debug, as_json)
        if debug:
            raise
        # Any path the user gives can be too long for the OS; that is bad input, not a bug.
        name = str(exc.filename or "")
        shown = name if len(name) <= 80 else f"{name[:40]}...{name[-30:]} ({len(name)} characters)"
        _error(f"file name too long: {shown}. Use a shorter file name or folder path "
               "(most file systems allow 255 bytes per name)", EXIT_BAD_INPUT, as_json)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as exc:  # a bug: say so plainly, traceback only with --debug
        _internal(exc, debug, as_json)


def _internal(exc: Exception, debug: bool, as_json: bool) -> NoReturn:
    """Report a bug plainly and exit 3; the traceback only with --debug."""
    if debug:
        raise exc
    _error(
        f"internal failure: {type(exc).__name__}: {exc}. This is a bug in edgekit or a converter; "
        "rerun with --debug for the traceback and report it",
        EXIT_INTERNAL, as_json,
    )
    sys.exit(EXIT_INTERNAL)
