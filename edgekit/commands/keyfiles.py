"""What the key and release commands share: the key passphrase, and printing a result as lines or JSON."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from edgekit.errors import InputError

PASSPHRASE_HELP = "Name of an environment variable holding the key's passphrase."


def emit(as_json: bool, document: dict[str, Any], lines: list[str]) -> None:
    """Print ``document`` as JSON with --json, else ``lines``."""
    if as_json:
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        for line in lines:
            click.echo(line)


def passphrase_from_env(variable: str | None) -> bytes | None:
    """The passphrase held in environment variable ``variable`` (None when no variable is named)."""
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise InputError(
            f"environment variable {variable} is not set or empty", f"Export {variable} with the key's passphrase"
        )
    return value.encode("utf-8")


def passphrase_for(private_key: Path, passphrase_env: str | None, prompt: str = "Passphrase") -> bytes | None:
    """The passphrase to open ``private_key``: from ``passphrase_env``, else asked in a terminal when it is encrypted."""
    from edgekit.release.signing import private_key_is_encrypted

    passphrase = passphrase_from_env(passphrase_env)
    if passphrase is None and private_key_is_encrypted(private_key) and sys.stdin.isatty():
        passphrase = click.prompt(prompt, hide_input=True).encode("utf-8")
    return passphrase
