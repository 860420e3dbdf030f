"""Release commands: bundle, cosign, verify, install, rollback, status.

verify, install and rollback are device-side: they import only the stdlib,
click and cryptography (through edgekit.release), never torch or a converter.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from edgekit.commands.keyfiles import PASSPHRASE_HELP, emit, passphrase_for


@click.command()
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key (from edgekit keygen).",
)
@click.option("--version", "version", required=True, metavar="X.Y.Z", help="Release version (semantic version).")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the bundles.",
)
@click.option("--channel", default="stable", show_default=True, help="Release channel, e.g. stable, beta.")
@click.option(
    "--rollout", type=click.IntRange(0, 100), default=100, show_default=True, help="Percentage of devices that take it."
)
@click.option("--rollback-to", metavar="X.Y.Z", help="Version devices should return to if this release misbehaves.")
@click.option("--min-app-version", metavar="VERSION", help="Oldest app version that can run this release.")
@click.option(
    "--expires-in",
    type=click.IntRange(1, 3650),
    default=90,
    show_default=True,
    metavar="DAYS",
    help="Days until devices refuse the bundle.",
)
@click.option(
    "--target",
    "-t",
    "targets",
    multiple=True,
    metavar="NAME",
    help="Bundle only this target (repeatable). Default: every target.",
)
@click.option("--all-in-one", is_flag=True, help="Also write one bundle holding every selected target.")
@click.option("--allow-failed", is_flag=True, help="Bundle artifacts that failed their budgets (the manifest says so).")
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option("--cert", "cert_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The --key's certificate from edgekit certify, for devices that trust the root key.")
@click.option("--revocations", "revocations_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The root's revocation list from edgekit revoke, carried to every device that installs this.")
@click.option("--force", is_flag=True,
              help="Replace bundle files of this version that exist with other bytes (releases are immutable otherwise).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bundle(
    build_dir: Path,
    key_path: Path,
    version: str,
    output: Path,
    channel: str,
    rollout: int,
    rollback_to: str | None,
    min_app_version: str | None,
    expires_in: int,
    targets: tuple[str, ...],
    all_in_one: bool,
    allow_failed: bool,
    passphrase_env: str | None,
    cert_path: Path | None,
    revocations_path: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Sign a build folder into release bundles (one tar.gz per target).

    Reproducible: with SOURCE_DATE_EPOCH set, the same build and key give the
    same bytes (it also sets issued-at; otherwise issued-at is now).
    """
    from edgekit.release import revocation
    from edgekit.release.bundle import ReleaseOptions, bundle_build
    from edgekit.release.signing import load_certificate, load_private_key
    from edgekit.release.timestamps import release_epoch

    options = ReleaseOptions(
        version=version,
        issued_at=release_epoch(),
        channel=channel,
        rollout_percentage=rollout,
        rollback_to=rollback_to,
        min_app_version=min_app_version,
        expires_in_days=expires_in,
    )
    options.check()
    passphrase = passphrase_for(key_path, passphrase_env, "Passphrase")
    private_key = load_private_key(key_path, passphrase)
    certificate = load_certificate(cert_path) if cert_path is not None else None
    revocations = revocation.load(revocations_path) if revocations_path is not None else None
    results = bundle_build(build_dir, private_key, options, output, list(targets), all_in_one, allow_failed,
                           replace=force, certificate=certificate, revocations=revocations)
    emit(
        as_json,
        {"bundles": [r.as_dict() for r in results]},
        [
            f"{r.path}  ({r.target or 'all targets'}, {r.artifacts} artifact(s), sha256 {r.sha256[:16]})"
            for r in results
        ],
    )


@click.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "key_paths",
    required=True,
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trusted public key (.pub): a release key, or a root key that certifies release keys (repeatable).",
)
@click.option(
    "--store",
    "store",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model store whose installed version the bundle must not be below.",
)
@click.option("--app-version", metavar="VERSION", help="This app's version, checked against the release's minimum.")
@click.option("--allow-downgrade", is_flag=True,
              help="Accept a version lower than the one installed in --store (an intended rollback).")
@click.option("--threshold", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Require signatures from K distinct trusted keys (threshold signing, see edgekit cosign).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(bundle_path: Path, key_paths: tuple[Path, ...], store: Path | None, app_version: str | None,
           allow_downgrade: bool, threshold: int, as_json: bool) -> None:
    """Check a bundle: signature, schema, every file's hash and size, expiry, version.

    Writes nothing: files are checked in a temporary folder that is removed.
    """
    from edgekit.release.signing import load_public_key
    from edgekit.release.store import Store
    from edgekit.release.verify import verify_bundle

    from edgekit.release.revocation import Revocations

    public_key = [load_public_key(path) for path in key_paths]
    state = Store(store).state() if store is not None else None
    installed = Store(store).installed_version() if store is not None else None
    remembered = Revocations.from_state(state.get("revocations")) if state else None
    with tempfile.TemporaryDirectory(prefix="edgekit-verify-") as scratch:
        verified = verify_bundle(bundle_path, public_key, Path(scratch), installed=installed, app_version=app_version,
                                 allow_downgrade=allow_downgrade, revoked=remembered, threshold=threshold)
    summary = {"ok": True, "bundle": str(bundle_path), **verified.summary()}
    emit(
        as_json,
        summary,
        [
            f"OK {bundle_path}: {summary['model']} {summary['version']} ({summary['channel']}, "
            f"{summary['target'] or 'all targets'}), {len(summary['artifacts'])} artifact(s)",
            f"signed by key {verified.key_id[:16]}, expires {summary['expires_at']}",
        ],
    )


@click.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path))
@click.option(
    "--into", "into", required=True, type=click.Path(file_okay=False, path_type=Path), help="The device's model store."
)
@click.option(
    "--key",
    "key_paths",
    required=True,
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trusted public key (.pub): a release key, or a root key that certifies release keys (repeatable).",
)
@click.option(
    "--allow-downgrade", is_flag=True, help="Install even if the bundle's version is lower than the installed one."
)
@click.option("--device-id", help="This device's id for rollout (default: $EDGEKIT_DEVICE_ID, then /etc/machine-id).")
@click.option("--force", is_flag=True,
              help="Install even if the rollout leaves this device out or the version was rolled back here.")
@click.option("--app-version", metavar="VERSION", help="This app's version, checked against the release's minimum.")
@click.option("--target", "-t", "target", envvar="EDGEKIT_TARGET", metavar="NAME",
              help="This device's target profile; recorded at the first install, checked against every bundle "
                   "[env EDGEKIT_TARGET].")
@click.option("--channel", envvar="EDGEKIT_CHANNEL", metavar="NAME",
              help="This device's release channel (default at the first install: stable) [env EDGEKIT_CHANNEL].")
@click.option("--group", metavar="NAME",
              help="Group that may read the installed model (folders 0750, files 0640); remembered for later installs.")
@click.option("--health-check", "health_check", metavar="CMD",
              help="Run CMD on the new version (EDGEKIT_MODEL_DIR, EDGEKIT_MODEL_VERSION set); roll back if it fails.")
@click.option("--health-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True, metavar="SECONDS",
              help="How long the health check may run before it counts as failed.")
@click.option("--threshold", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Require signatures from K distinct trusted keys (threshold signing, see edgekit cosign).")
@click.option("--index", "index_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A fresh release index (edgekit index): refuse a release older than the one it lists.")
@click.option("--no-runtime-check", is_flag=True,
              help="Install although no artifact can run in this machine's runtimes (a store for another machine).")
@click.option("--candidate", "candidate_percent", type=click.IntRange(1, 100), metavar="PERCENT",
              help="Keep the release as an A/B candidate for PERCENT of units beside the current version "
                   "(edgekit serve routes them; edgekit experiment promotes or aborts).")
@click.option("--abort-if", "abort_if", multiple=True, metavar="NAME=VALUE",
              help="With --candidate: when the runtime aborts it (error_rate 0.05, p99_ratio 3, p99_ms off, "
                   "min_requests 50 by default; 'off' disables one).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def install(
    bundle_path: Path,
    into: Path,
    key_paths: tuple[Path, ...],
    allow_downgrade: bool,
    device_id: str | None,
    force: bool,
    app_version: str | None,
    target: str | None,
    channel: str | None,
    group: str | None,
    health_check: str | None,
    health_timeout: float,
    threshold: int,
    index_path: Path | None,
    no_runtime_check: bool,
    candidate_percent: int | None,
    abort_if: tuple[str, ...],
    as_json: bool,
) -> None:
    """Verify a bundle, then make it the store's current version atomically.

    Refused when the bundle was made for another target or channel than the
    store's device (named by --target / --channel at the first install), and
    unless some artifact can run in the runtimes installed here (the minimum
    versions the manifest records). The replaced version is kept for
    edgekit rollback. With --health-check, the new version must pass the
    device's own check or the store rolls back (exit 1). Every install
    appends a line to the store's install.log.
    """
    from edgekit.release import rollout
    from edgekit.release.health import parse_command
    from edgekit.release.signing import load_public_key
    from edgekit.release.store import install_bundle

    command = parse_command(health_check) if health_check is not None else None
    plan = _candidate_plan(candidate_percent, abort_if)
    public_key = [load_public_key(path) for path in key_paths]
    index = None
    if index_path is not None:
        import time

        from edgekit.release.index import load_index

        index = load_index(index_path, public_key, time.time(), threshold)
    result = install_bundle(
        bundle_path,
        into,
        public_key,
        allow_downgrade=allow_downgrade,
        force=force,
        device_id=rollout.device_id(device_id),
        app_version=app_version,
        runtime_check=not no_runtime_check,
        target=target,
        channel=channel,
        group=group,
        threshold=threshold,
        index=index,
        candidate=plan,
    )
    messages = {
        "installed": f"installed {result.model} {result.version} into {into}"
        + (f" (previous: {result.previous})" if result.previous else ""),
        "candidate": f"installed {result.model} {result.version} into {into} as the candidate for "
        f"{candidate_percent}% of units (control: {result.previous})",
        "unchanged": f"{result.model} {result.version} is already installed in {into}; nothing changed",
        "deferred": f"not installed: the rollout of {result.version} is at {result.rollout_percentage}% "
        f"and this device is in bucket {result.bucket} (pass --force to install anyway)",
        "blocked": f"not installed: {result.model} {result.version} was rolled back on this device "
        "(pass --force to install it again)",
    }
    lines = [messages[result.status]]
    if result.status in ("installed", "candidate", "unchanged"):
        lines += [f"  {fit.describe()}" for fit in result.runtimes]
    document = result.as_dict()
    if command is not None and result.status in ("installed", "candidate"):
        document["health_check"] = _commit_or_revert(command, health_timeout, result, into)
        lines.append(f"health check passed ({document['health_check']['reason']})")
    emit(as_json, document, lines)


def _candidate_plan(percent: int | None, abort_if: tuple[str, ...]) -> Any:
    """The experiment ``install --candidate`` starts, or None for a plain install."""
    from edgekit.errors import InputError
    from edgekit.release.experiment import CandidatePlan, parse_rule_options

    if percent is None:
        if abort_if:
            raise InputError("--abort-if applies to a candidate only", "Add --candidate PERCENT, or drop --abort-if")
        return None
    return CandidatePlan(percent, parse_rule_options(abort_if))


def _commit_or_revert(command: list[str], timeout_s: float, result: Any, into: Path) -> dict[str, Any]:
    """Run the health check on the version just installed; on failure roll back and raise DeviceCheckError.

    A candidate that fails is aborted instead: the control never stopped serving.
    """
    from edgekit.errors import DeviceCheckError
    from edgekit.release.candidate import abort
    from edgekit.release.health import run_health_check
    from edgekit.release.store import revert_install

    health = run_health_check(command, result.path, result.version, timeout_s)
    if health.passed:
        return health.as_dict()
    if result.status == "candidate":
        abort(into, {"by": "health-check", **health.as_dict()}, result.device_id, only_version=result.version)
        now, back = result.previous, f"aborted the experiment; {result.previous} keeps serving"
    else:
        now = revert_install(into, result.version, result.device_id, health.as_dict())
        back = f"rolled back to {now}" if now else "removed it (the store had no earlier version)"
    output = f"; its output ends: {health.output.strip()[-300:]}" if health.output.strip() else ""
    blocked = (f"{result.version} is blocked on this device (--force installs it again); " if now else "")
    raise DeviceCheckError(
        f"{result.model} {result.version} failed its health check ({health.reason}); {back}{output}",
        f"{blocked}fix the release and ship it as a new version",
    )


@click.command()
@click.option(
    "--into", "into", required=True, type=click.Path(file_okay=False, path_type=Path), help="The device's model store."
)
@click.option(
    "--device-id", help="This device's id, for the audit log (default: $EDGEKIT_DEVICE_ID, then /etc/machine-id)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def rollback(into: Path, device_id: str | None, as_json: bool) -> None:
    """Switch the store back to its previous version atomically."""
    from edgekit.release import rollout
    from edgekit.release.store import rollback as rollback_store

    result = rollback_store(into, rollout.device_id(device_id))
    emit(
        as_json, result.as_dict(), [f"rolled back {result.model} from {result.previous} to {result.version} in {into}"]
    )


@click.command()
@click.option("--into", "into", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The device's model store.")
@click.option("--key", "key_paths", required=True, multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Trusted public key (.pub), as for install (repeatable).")
@click.option("--max-age", type=click.FloatRange(min=0), metavar="DAYS",
              help="Also fail when the running release was issued more than DAYS ago (a frozen device).")
@click.option("--index", "index_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A release index (edgekit index): fail unless it is fresh and lists the running release as current.")
@click.option("--threshold", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="Require signatures from K distinct trusted keys (threshold signing, see edgekit cosign).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def status(into: Path, key_paths: tuple[Path, ...], max_age: float | None, threshold: int, index_path: Path | None,
           as_json: bool) -> None:
    """Re-check the running release: files, signature and certificate, expiry, revocation (exit 1 if one fails)."""
    from edgekit.errors import DeviceCheckError
    from edgekit.release.signing import load_public_key
    from edgekit.release.status import check_status

    report = check_status(into, [load_public_key(path) for path in key_paths], max_age_days=max_age,
                          threshold=threshold, index_path=index_path)
    lines = [f"{report['model']} {report['version']} in {into}:"]
    lines += [f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['note']}" for c in report["checks"]]
    emit(as_json, report, lines)
    if not report["healthy"]:
        failed = ", ".join(c["check"] for c in report["checks"] if not c["ok"])
        raise DeviceCheckError(f"the running release {report['version']} fails {failed}",
                               "Install a current release, or roll back (edgekit rollback)", reported=True)


@click.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The co-signer's private key.")
@click.option("--cert", "cert_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The key's certificate from edgekit certify, for devices that trust the root key.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the co-signed bundle (default: replace BUNDLE).")
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def cosign(bundle_path: Path, key_path: Path, cert_path: Path | None, output: Path | None, passphrase_env: str | None,
           as_json: bool) -> None:
    """Add a co-signature to a signed bundle (threshold signing: devices may require K signers with --threshold)."""
    from edgekit.release.cosigning import cosign_bundle
    from edgekit.release.signing import load_certificate, load_private_key

    passphrase = passphrase_for(key_path, passphrase_env, "Passphrase")
    certificate = load_certificate(cert_path) if cert_path is not None else None
    result = cosign_bundle(bundle_path, load_private_key(key_path, passphrase), output or bundle_path, certificate)
    emit(as_json, {"bundle": result.as_dict()}, [f"{result.path}: co-signed ({result.version}, {result.target})"])


@click.command("index")
@click.argument("bundles", metavar="BUNDLE...", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key that signs the index (a release key, or one certified with --cert).")
@click.option("--cert", "cert_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The key's certificate from edgekit certify.")
@click.option("--expires-in", type=click.FloatRange(min=0.01, max=24 * 31), default=24.0, show_default=True,
              metavar="HOURS", help="Hours until devices stop accepting this index; publish a new one before.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Index file to write (devices fetch it and pass it to install/status --index).")
@click.option("--passphrase-env", metavar="VAR", help=PASSPHRASE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def index_command(bundles: tuple[Path, ...], key_path: Path, cert_path: Path | None, expires_in: float, output: Path,
                  passphrase_env: str | None, as_json: bool) -> None:
    """Sign a short-lived index of the latest releases among BUNDLE... (the defence against freeze and replay)."""
    from edgekit.artifact import atomic_write_bytes
    from edgekit.release.archive import open_bundle
    from edgekit.release.index import make_index
    from edgekit.release.signing import load_certificate, load_private_key
    from edgekit.release.timestamps import release_epoch

    manifests = []
    for path in bundles:
        with open_bundle(path) as reader:
            manifests.append(reader.read_head()[0])
    key = load_private_key(key_path, passphrase_for(key_path, passphrase_env))
    issued = release_epoch()
    certificate = load_certificate(cert_path) if cert_path is not None else None
    data = make_index(manifests, key, issued, issued + round(expires_in * 3600), certificate)
    atomic_write_bytes(output, data)
    listed = json.loads(data)["releases"]
    emit(as_json, {"index": str(output), "releases": listed},
         [f"{output}: {len(listed)} release(s), expires in {expires_in:g} h"]
         + [f"  {r['model']} {r['version']} ({r['target']}, {r['channel']})" for r in listed])


COMMANDS = [bundle, cosign, index_command, verify, install, rollback, status]
