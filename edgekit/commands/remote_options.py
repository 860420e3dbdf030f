"""``--remote ssh://user@host`` for ``bench`` and ``validate``: the options and what each command sends.

``remote_options`` adds the options to a click command and hands the
command one ``remote`` argument (a ``RemoteOptions``, or None without
``--remote``). ``bench_on_device`` and ``validate_on_device`` copy the
command's inputs to the device, run the same command there with ``--json``
(``edgekit.remote.run_on_device``) and return what it printed, so the
caller prints and checks it exactly as after a local run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

_OPTIONS = (
    click.option("--remote", "remote_url", metavar="ssh://USER@HOST[:PORT]", default=None,
                 help="Run on this device over SSH (key login; its host key must be known) and print the result here."),
    click.option("--python", "remote_python", metavar="PATH", default=None,
                 help="With --remote: the device's Python (default: the --install venv if there, else python3)."),
    click.option("--install", "remote_install", is_flag=True,
                 help="With --remote: create or refresh a venv on the device with this edgekit (a wheel built here) "
                      "and its runtime extra."),
    click.option("--venv", "remote_venv", metavar="PATH", default=None,
                 help="With --remote: the venv on the device [default: ~/.cache/edgekit/venv]."),
    click.option("--known-hosts", "known_hosts", type=click.Path(path_type=Path), default=None,
                 help="With --remote: verify the device's host key against this file instead of ~/.ssh/known_hosts."),
    click.option("--identity", "identity", type=click.Path(path_type=Path), default=None,
                 help="With --remote: the private key to log in with (ssh -i)."),
    click.option("--wheels", "wheels", type=click.Path(path_type=Path), default=None,
                 help="With --install: install the dependencies only from this folder of wheels made for the device."),
)


def remote_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the --remote options; the command receives them as one ``remote`` keyword (RemoteOptions or None).

    Put it directly above the ``def`` (below the command's own options), so
    the command's options come first in ``--help``.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, remote_url: str | None, remote_python: str | None, remote_install: bool,
                remote_venv: str | None, known_hosts: Path | None, identity: Path | None, wheels: Path | None,
                **kwargs: Any) -> Any:
        remote = _options(remote_url, remote_python, remote_install, remote_venv, known_hosts, identity, wheels)
        return command(*args, remote=remote, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def _options(url: str | None, python: str | None, install: bool, venv: str | None, known_hosts: Path | None,
             identity: Path | None, wheels: Path | None) -> Any:
    from edgekit.remote import DEFAULT_VENV, RemoteOptions, SshTarget

    if url is None:
        given = [name for name, value in (("--python", python), ("--install", install), ("--venv", venv),
                                          ("--known-hosts", known_hosts), ("--identity", identity),
                                          ("--wheels", wheels)) if value]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply with --remote ssh://user@host")
        return None
    if wheels is not None and not install:
        raise click.UsageError("--wheels only applies with --install")
    return RemoteOptions(SshTarget.parse(url), python, install, venv or DEFAULT_VENV, known_hosts, identity, wheels)


def bench_on_device(remote: Any, artifacts: tuple[Path, ...], data: Path | None, options: list[str],
                    progress: Callable[[str], None]) -> dict[str, Any]:
    """``edgekit bench run ARTIFACTS OPTIONS --json`` on the device: its bench document plus a ``remote`` field.

    ``options`` are the measuring options as command-line words (threads,
    batch, runs, ...); budgets are checked by the caller, here, against the
    profiles on this machine.
    """
    from edgekit import bench as core
    from edgekit.errors import RemoteError
    from edgekit.remote import Upload, run_on_device

    upload = Upload()
    paths = [upload.add(path) for path in artifacts]
    words = ["--data", upload.add(data)] if data is not None else []
    run = run_on_device(remote, upload, ["bench", "run", *paths, *words, *options, "--json"], progress)
    document = run.document
    if document.get("schema") != core.SCHEMA or not isinstance(document.get("results"), list):
        raise RemoteError(f"edgekit on {remote.target} returned no bench document (exit code {run.exit_code})",
                          "Run the same bench on the device with --debug to see why, or --install this version there")
    return {**document, "remote": run.remote}


def validate_on_device(remote: Any, artifact: Path, data: Path, options: list[str], files: dict[str, Path | None],
                       progress: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    """``edgekit validate ARTIFACT --data DATA OPTIONS --json`` on the device: its report and exit code.

    ``files`` maps options that name a local file (``--manifest``,
    ``--reference``, ``--target`` when it is a .toml) to the file, which is
    copied along; the build's ``<artifact>.report.json`` travels with each
    artifact, as validate reads it from beside the artifact.
    """
    from edgekit.errors import RemoteError
    from edgekit.remote import Upload, run_on_device

    upload = Upload()
    words = [upload.add(artifact, (Path(f"{artifact}.report.json"),)), "--data", upload.add(data), *options]
    for option, path in files.items():
        if path is not None:
            words += [option, upload.add(path, (Path(f"{path}.report.json"),))]
    run = run_on_device(remote, upload, ["validate", *words, "--json"], progress)
    report = run.document
    if "metrics" not in report:
        raise RemoteError(f"edgekit on {remote.target} returned no validation report (exit code {run.exit_code})",
                          "Run the same validate on the device with --debug to see why")
    if isinstance(report.get("manifest"), dict) and files.get("--manifest") is not None:
        report["manifest"]["file"] = str(files["--manifest"])  # the copy on the device is gone
    return {**report, "artifact": str(artifact), "remote": run.remote}, run.exit_code
