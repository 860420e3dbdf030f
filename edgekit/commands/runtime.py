"""Device-side serving: ``edgekit serve`` and ``edgekit experiment`` (A/B candidates in a store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgekit.commands.keyfiles import emit

_INTO = click.option("--into", "into", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="The device's model store.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@click.command()
@click.argument("store", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The endpoint has no authentication: keep it local unless a proxy adds some.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0 picks a free one).")
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True, help="Request threads.")
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Hash-chained log of every prediction [default: STORE/predictions.log].")
@click.option("--no-audit", is_flag=True, help="Keep no audit log.")
@click.option("--cache", "cache_size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Cache the outputs of this many distinct inputs (0: no cache).")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="Micro-batch concurrent requests into batches of up to this many samples.")
@click.option("--max-wait", "max_wait_ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="With --max-batch: how long a request may wait for a batch to fill (ms).")
@click.option("--prefer", "prefer", multiple=True, metavar="FORMAT",
              help="Artifact format to serve when the release has several that run here (repeatable, in order).")
@click.option("--range-tolerance", type=click.FloatRange(min=0), default=None,
              help="Accept inputs this share of the calibrated span beyond it [default: 0.25].")
@click.option("--no-range-check", is_flag=True, help="Accept inputs outside the range the model was calibrated for.")
@click.option("--no-auto-abort", is_flag=True, help="Never abort a candidate automatically.")
@click.option("--device-id", help="This device's id, for the install log when a candidate is aborted.")
def serve(store: Path, host: str, port: int, threads: int, audit_log: Path | None, no_audit: bool, cache_size: int,
          max_batch: int | None, max_wait_ms: float, prefer: tuple[str, ...], range_tolerance: float | None,
          no_range_check: bool, no_auto_abort: bool, device_id: str | None) -> None:
    """Serve the store's installed model over HTTP (POST /v1/predict; GET /v1/stats, /v1/interface, /v1/health).

    Runs the current release, and an A/B candidate when one is installed
    (edgekit install --candidate): units are routed by their unit_id. Every
    prediction is appended to a hash-chained audit log (edgekit audit
    verify). The server follows the store: installs, promotes and aborts
    take effect without a restart.
    """
    from edgekit.release import rollout
    from edgekit.runtime.interface import DEFAULT_RANGE_TOLERANCE
    from edgekit.runtime.model import Model
    from edgekit.runtime.server import create_server

    tolerance = None if no_range_check else (DEFAULT_RANGE_TOLERANCE if range_tolerance is None else range_tolerance)
    model = Model.open(store, audit_log=False if no_audit else (audit_log or True), cache_size=cache_size,
                       max_batch=max_batch, max_wait_ms=max_wait_ms, prefer=prefer, range_tolerance=tolerance,
                       auto_abort=not no_auto_abort, device_id=rollout.device_id(device_id))
    try:
        server = create_server(model, host, port, threads)
        arms = ", ".join(f"{name} {arm['version']} ({arm['artifact']})" for name, arm in model.stats()["arms"].items())
        click.echo(f"serving {model.stats()['model']} from {store} on http://{host}:{server.effective_port} [{arms}]",
                   err=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"warning: listening on {host} without authentication", err=True)
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
    finally:
        model.close()


@click.group()
def experiment() -> None:
    """A/B experiments in a store: show, promote or abort the candidate, or change its share of units.

    \b
    Start one with: edgekit install BUNDLE --into STORE --candidate PERCENT
    """


@experiment.command("show")
@_INTO
@_JSON
def show(into: Path, as_json: bool) -> None:
    """The control, the candidate, its share of units and its abort rule."""
    from edgekit.release.store import Store

    state = Store(into).state()
    if state is None:
        from edgekit.errors import InputError

        raise InputError(f"no model is installed in {into}", "Install one with edgekit install")
    candidate = state.get("candidate")
    document = {"model": state["model"], "control": state["current"]["version"],
                "candidate": {k: candidate[k] for k in ("version", "percentage", "abort", "started_at")}
                if candidate else None}
    lines = [f"{state['model']}: control {document['control']}"]
    if candidate:
        rule = ", ".join(f"{k} {v if v is not None else 'off'}" for k, v in candidate["abort"].items())
        lines.append(f"candidate {candidate['version']} for {candidate['percentage']}% of units since "
                     f"{candidate['started_at']}; aborts when {rule}")
    else:
        lines.append("no experiment is running")
    emit(as_json, document, lines)


@experiment.command("promote")
@_INTO
@click.option("--device-id", help="This device's id, for the install log.")
@_JSON
def promote(into: Path, device_id: str | None, as_json: bool) -> None:
    """Make the candidate the current version (the control is kept for edgekit rollback)."""
    from edgekit.release import rollout
    from edgekit.release.candidate import promote as promote_candidate

    result = promote_candidate(into, rollout.device_id(device_id))
    emit(as_json, result.as_dict(), [f"promoted {result.model} {result.version} (previous: {result.control})"])


@experiment.command("abort")
@_INTO
@click.option("--reason", default="by hand", show_default=True, help="Why, for the install log.")
@click.option("--device-id", help="This device's id, for the install log.")
@_JSON
def abort(into: Path, reason: str, device_id: str | None, as_json: bool) -> None:
    """End the experiment: remove the candidate and block its version on this device."""
    from edgekit.release import rollout
    from edgekit.release.candidate import abort as abort_candidate

    result: Any = abort_candidate(into, {"by": "hand", "note": reason}, rollout.device_id(device_id))
    emit(as_json, result.as_dict(), [f"aborted {result.model} {result.version}; {result.control} serves every unit"])


@experiment.command("percentage")
@_INTO
@click.argument("percent", type=click.IntRange(1, 100))
@click.option("--device-id", help="This device's id, for the install log.")
@_JSON
def percentage(into: Path, percent: int, device_id: str | None, as_json: bool) -> None:
    """Send PERCENT of units to the candidate (raising it only adds units: a gradual rollout)."""
    from edgekit.release import rollout
    from edgekit.release.candidate import set_percentage

    result = set_percentage(into, percent, rollout.device_id(device_id))
    emit(as_json, result.as_dict(), [f"{result.model} {result.version} now serves {percent}% of units"])


COMMANDS = [serve, experiment]
