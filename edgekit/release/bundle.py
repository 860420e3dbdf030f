"""Release bundles from a build folder: derive, sign and pack a release manifest.

A release manifest is the build manifest narrowed to one target's artifacts
(or all of them), plus two objects the build does not have:

- ``release``: version, channel, rollout percentage, rollback-to version,
  minimum app version, issued-at, expires-at and the target (null when the
  bundle holds every target);
- ``files``: every file in the bundle (artifacts, files inside .mlpackage
  folders, validation reports) with its sha256 and size, so a verifier can
  prove the archive holds exactly these bytes and nothing else.

Before signing, the build folder is checked against its own manifest: edgekit
signs only artifacts whose bytes are the ones the build validated.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.artifact import sha256_file, size_bytes
from edgekit.errors import InputError, OutputError
from edgekit.release.archive import check_member_name, write_bundle
from edgekit.release.manifest import MANIFEST_NAME, canonical_bytes, read_manifest
from edgekit.release.schema import validate_manifest
from edgekit.release.signing import SIGNATURE_NAME, sign
from edgekit.release.timestamps import format_utc
from edgekit.release.version import parse_loose, parse_semver

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DAY = 86_400


@dataclass(frozen=True)
class ReleaseOptions:
    """The release facts a bundle adds to a build (validated by ``check``)."""

    version: str
    issued_at: int
    channel: str = "stable"
    rollout_percentage: int = 100
    rollback_to: str | None = None
    min_app_version: str | None = None
    expires_in_days: int = 90

    def check(self) -> None:
        """Raise InputError for an option no device could act on sensibly."""
        version = parse_semver(self.version, "--version")
        if self.rollback_to is not None and parse_semver(self.rollback_to, "--rollback-to") >= version:
            raise InputError(
                f"--rollback-to {self.rollback_to} is not lower than --version {self.version}",
                "Name the earlier release devices should return to",
            )
        if self.min_app_version is not None:
            parse_loose(self.min_app_version, "--min-app-version")
        if not 0 <= self.rollout_percentage <= 100:
            raise InputError(f"--rollout {self.rollout_percentage} is not a percentage", "Use 0 to 100")
        if self.expires_in_days < 1:
            raise InputError(
                f"--expires-in {self.expires_in_days} must be at least 1 day", "Pass a positive number of days"
            )


@dataclass(frozen=True)
class BundleResult:
    """One written bundle."""

    path: Path
    target: str | None
    version: str
    sha256: str
    size_bytes: int
    artifacts: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "target": self.target,
            "version": self.version,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "artifacts": self.artifacts,
        }


def load_build(build_dir: Path) -> dict[str, Any]:
    """Read and schema-check ``build_dir/manifest.json``; prove every listed file is as recorded."""
    path = build_dir / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{build_dir} has no {MANIFEST_NAME}", "Pass the output folder of edgekit build")
    try:
        build = read_manifest(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})", "Rebuild with edgekit build") from None
    validate_manifest(build, what=str(path))
    if "release" in build or "files" in build:
        raise InputError(
            f"{path} is a release manifest, not a build manifest", "Pass the build folder, not an unpacked bundle"
        )
    root = build_dir.resolve()
    for artifact in build["artifacts"]:
        _check_artifact(root, artifact, path)
    return build


def _inside(root: Path, relative: str, what: str) -> Path:
    # Reject symlinks anywhere on the way: a bundle must hold the build's own bytes.
    path = root.joinpath(*relative.split("/"))
    probe = path
    while probe != root:
        if probe.is_symlink():
            raise InputError(
                f"{what} {relative} is (or is inside) a symbolic link", "Bundle real files; copy the target in"
            )
        probe = probe.parent
    if not path.exists():
        raise InputError(f"{what} {relative} is listed in the build manifest but missing", "Rerun edgekit build")
    return path


def _check_artifact(root: Path, artifact: dict[str, Any], manifest_path: Path) -> None:
    path = _inside(root, artifact["path"], "artifact")
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"artifact {artifact['path']} is not a regular file or folder", "Rerun edgekit build")
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_symlink() or not (child.is_file() or child.is_dir()):
                raise InputError(
                    f"{child} is not a regular file", "Remove links and special files from the artifact folder"
                )
    if sha256_file(path) != artifact["sha256"] or size_bytes(path) != artifact["size_bytes"]:
        raise InputError(
            f"artifact {artifact['path']} changed after the build (its sha256 or size differs from {manifest_path})",
            "Rerun edgekit build; edgekit signs only what the build validated",
        )
    if "report" in artifact:
        report = _inside(root, artifact["report"], "report")
        if not report.is_file():
            raise InputError(f"report {artifact['report']} is not a file", "Rerun edgekit build")
    for relative, digest in firmware_files(artifact).items():
        path = _inside(root, relative, "firmware file")
        if not path.is_file() or sha256_file(path) != digest:
            raise InputError(f"firmware file {relative} changed after the build (its sha256 differs from "
                             f"{manifest_path})", "Rerun edgekit build; edgekit signs only what the build wrote")


def firmware_files(artifact: dict[str, Any]) -> dict[str, str]:
    """The firmware library files (relative path -> sha256) a build shipped beside an artifact, if any."""
    firmware = artifact.get("firmware")
    files = firmware.get("files") if isinstance(firmware, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def select_targets(build: dict[str, Any], requested: list[str], allow_failed: bool) -> list[str]:
    """The targets to bundle: ``requested`` or every target with artifacts; refuse failed ones."""
    with_artifacts: list[str] = []
    for artifact in build["artifacts"]:
        if artifact["target"] not in with_artifacts:
            with_artifacts.append(artifact["target"])
    if requested:
        unknown = [name for name in requested if name not in with_artifacts]
        if unknown:
            raise InputError(
                f"build has no artifacts for target(s) {', '.join(unknown)}",
                f"Choose from: {', '.join(with_artifacts) or '(none)'}",
            )
        chosen = list(dict.fromkeys(requested))
    else:
        chosen = with_artifacts
    if not chosen:
        raise InputError(
            "the build has no artifacts to bundle", "Run edgekit build with at least one target that passes"
        )
    if not allow_failed:
        failed = [
            f"{a['target']}/{a['path'].rsplit('/', 1)[-1]}"
            for a in build["artifacts"]
            if a["target"] in chosen and not a["passed"]
        ]
        failed += [
            f"target {t['name']} ({t['status']})"
            for t in build["targets"]
            if t["name"] in chosen and t["status"] in ("failed", "error")
        ]
        if failed:
            raise InputError(
                f"the build shows failures that would be shipped: {', '.join(failed)}",
                "Fix the build, choose other targets with --target, or pass --allow-failed to ship them anyway",
            )
    return chosen


def release_manifest(
    build: dict[str, Any], build_dir: Path, targets: list[str], options: ReleaseOptions, single_target: bool
) -> tuple[dict[str, Any], dict[str, Path]]:
    """The release manifest for ``targets`` and the bundle files it lists (archive name -> path)."""
    manifest = copy.deepcopy(build)
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["target"] in targets]
    manifest["targets"] = [t for t in manifest["targets"] if t["name"] in targets]
    manifest["release"] = {
        "version": options.version,
        "channel": options.channel,
        "rollout_percentage": options.rollout_percentage,
        "rollback_to": options.rollback_to,
        "min_app_version": options.min_app_version,
        "issued_at": format_utc(options.issued_at),
        "expires_at": format_utc(options.issued_at + options.expires_in_days * DAY),
        "target": targets[0] if single_target else None,
    }
    sources: dict[str, Path] = {}
    root = build_dir.resolve()
    for artifact in manifest["artifacts"]:
        path = root.joinpath(*artifact["path"].split("/"))
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                sources[child.relative_to(root).as_posix()] = child
        else:
            sources[artifact["path"]] = path
        if "report" in artifact:
            sources[artifact["report"]] = root.joinpath(*artifact["report"].split("/"))
        for relative in firmware_files(artifact):
            sources[relative] = root.joinpath(*relative.split("/"))
    for name in sources:
        check_member_name(name)  # e.g. a hidden file inside an .mlpackage
        if name in (MANIFEST_NAME, SIGNATURE_NAME):
            raise InputError(f"artifact file {name} would clash with the bundle's own {name}", "Rename the artifact")
    manifest["files"] = {
        name: {"sha256": sha256_file(path), "size_bytes": path.stat().st_size} for name, path in sorted(sources.items())
    }
    validate_manifest(manifest, what="the release manifest", release=True)
    return manifest, sources


def bundle_name(model: str, version: str, target: str | None) -> str:
    """``<model>-<version>-<target>.tar.gz``, or ``<model>-<version>.tar.gz`` for all targets."""
    return f"{model}-{version}-{target}.tar.gz" if target else f"{model}-{version}.tar.gz"


def write_release_bundle(
    manifest: dict[str, Any], sources: dict[str, Path], private_key: Ed25519PrivateKey, destination: Path, mtime: int,
    certificate: dict[str, str] | None = None,
    revocations: dict[str, Any] | None = None,
) -> BundleResult:
    """Sign ``manifest`` (embedding the key's ``certificate`` and the root's ``revocations``, when given) and
    write the bundle atomically."""
    manifest_bytes = canonical_bytes(manifest)
    entries: list[tuple[str, bytes | Path]] = [
        (MANIFEST_NAME, manifest_bytes),
        (SIGNATURE_NAME, sign(manifest_bytes, private_key, certificate, revocations)),
    ]
    entries += sorted(sources.items())
    try:
        write_bundle(destination, entries, mtime)
    except OSError as exc:
        raise OutputError(
            f"cannot write {destination}: {exc.strerror or exc}", "Choose an output folder you can write to with -o"
        ) from None
    return BundleResult(
        destination,
        manifest["release"]["target"],
        manifest["release"]["version"],
        sha256_file(destination),
        os.stat(destination).st_size,
        len(manifest["artifacts"]),
    )


def bundle_build(
    build_dir: Path,
    private_key: Ed25519PrivateKey,
    options: ReleaseOptions,
    out_dir: Path,
    targets: list[str] | None = None,
    all_in_one: bool = False,
    allow_failed: bool = False,
    replace: bool = False,
    certificate: dict[str, str] | None = None,
    revocations: dict[str, Any] | None = None,
) -> list[BundleResult]:
    """Write one bundle per selected target (plus one for all of them with ``all_in_one``).

    A signed release is immutable: a bundle file that already exists with
    other bytes is not replaced unless ``replace`` (devices that installed the
    first bytes refuse the second as the same version with other contents).
    Every bundle is staged first, so a refusal leaves all existing files as
    they were; rewriting identical bytes is fine.
    """
    options.check()
    build = load_build(build_dir)
    chosen = select_targets(build, targets or [], allow_failed)
    model = build["model"]["name"]
    plans: list[tuple[list[str], bool]] = [([name], True) for name in chosen]
    if all_in_one:
        plans.append((chosen, False))
    staged: list[tuple[Path, BundleResult]] = []
    try:
        for names, single in plans:
            manifest, sources = release_manifest(build, build_dir, names, options, single)
            destination = out_dir / bundle_name(model, options.version, names[0] if single else None)
            staging = destination.with_name(f".{destination.name}.staged")
            made = write_release_bundle(manifest, sources, private_key, staging, options.issued_at, certificate,
                                        revocations)
            staged.append((staging, dataclasses.replace(made, path=destination)))
        clashes = [r.path.name for _, r in staged if r.path.exists() and sha256_file(r.path) != r.sha256]
        if clashes and not replace:
            raise OutputError(
                f"{', '.join(clashes)} already exist(s) in {out_dir} with other bytes; a signed release of version "
                f"{options.version} is immutable (devices that installed it would refuse the new bytes)",
                "Bundle a new --version, or pass --force to replace the files on purpose",
            )
        for staging, result in staged:
            os.replace(staging, result.path)
    finally:
        for staging, _ in staged:
            staging.unlink(missing_ok=True)
    return [result for _, result in staged]
