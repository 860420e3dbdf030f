"""``validate --manifest``: the build's own record of an artifact, found by the artifact's sha256.

On the device the user has the artifact and the manifest it shipped with
(a build's ``manifest.json`` or a bundle's). Instead of retyping the target,
budgets and FP32 accuracy, ``validate`` reads them from the manifest entry
whose ``sha256`` is the file's. A file whose hash is in no entry has changed
since the build (or belongs to another build) and is refused: judging it by
another file's budgets would certify bytes nobody validated.

One artifact can appear under several targets (the same file built for two
profiles); ``target`` then picks the entry, and without it the choice is an
error listing them. No torch, no converter: this runs on devices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import InputError


@dataclass(frozen=True)
class ManifestEntry:
    """What the build recorded about one artifact for one target.

    ``budgets`` are the artifact's own (already resolved for its precision);
    ``reference_accuracy`` is the FP32 model's accuracy on the evaluation
    split (None when the data had no labels); ``metrics`` are the build's
    measurements, shown beside the device's; ``facts`` are the backend facts
    the manifest carries (``CandidateFacts.MANIFEST_KEYS``).
    """

    manifest: Path
    target: str
    precision: str
    sha256: str
    path: str
    budgets: dict[str, Any]
    reference_accuracy: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The ``manifest`` record of a validate report: where the budgets came from."""
        return {"file": str(self.manifest), "target": self.target, "path": self.path, "sha256": self.sha256,
                "precision": self.precision, "build_metrics": self.metrics}


def load_manifest(path: Path) -> dict[str, Any]:
    """A build or release manifest, checked against the manifest schema."""
    from edgekit.release.schema import validate_manifest

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"manifest not found: {path}", "Give the manifest.json written by `edgekit build`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a readable JSON manifest ({exc})",
                         "Give the manifest.json written by `edgekit build` (or the one inside its bundle)") from None
    return validate_manifest(document, what=str(path))


def find_entry(manifest_path: Path, artifact: Path, target: str | None = None) -> ManifestEntry:
    """The manifest entry of ``artifact`` (matched by sha256), for ``target`` when several match.

    Raises InputError when the file's hash is in no entry (it changed since
    the build), when ``target`` matches none of its entries, or when several
    entries match and no ``target`` says which.
    """
    from edgekit.artifact import sha256_file

    manifest = load_manifest(manifest_path)
    if not artifact.exists():
        raise InputError(f"artifact not found: {artifact}", "Check the path")
    digest = sha256_file(artifact)
    entries = [a for a in manifest["artifacts"] if a["sha256"] == digest]
    if not entries:
        raise InputError(_unlisted(manifest, artifact, digest, manifest_path),
                         "Validate the file the build made (copy it again), or rebuild and use the new manifest")
    if target is not None:
        matching = [a for a in entries if a["target"] == target]
        if not matching:
            raise InputError(f"{artifact.name} is in {manifest_path.name} for {_names(entries)}, not for {target}",
                             f"Pass --target {entries[0]['target']}, or leave --target out")
        entries = matching
    if len(entries) > 1:
        raise InputError(f"{artifact.name} is in {manifest_path.name} for several targets: {_names(entries)}",
                         f"Pass --target NAME to say whose budgets to check, e.g. --target {entries[0]['target']}")
    return _entry(manifest, entries[0], manifest_path)


def _names(entries: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({a["target"] for a in entries}))


def _unlisted(manifest: dict[str, Any], artifact: Path, digest: str, manifest_path: Path) -> str:
    """Why the file matches no entry, naming the entry it was probably meant to be."""
    same_name = [a for a in manifest["artifacts"] if Path(a["path"]).name == artifact.name]
    if same_name:
        return (f"{artifact.name} has sha256 {digest[:12]}..., but {manifest_path.name} lists "
                f"{same_name[0]['path']} with {same_name[0]['sha256'][:12]}...: the file changed since the build")
    return f"no artifact in {manifest_path.name} has the sha256 of {artifact.name} ({digest[:12]}...)"


def _entry(manifest: dict[str, Any], entry: dict[str, Any], manifest_path: Path) -> ManifestEntry:
    from edgekit.artifact import CandidateFacts

    reference = manifest.get("reference")
    accuracy = reference.get("accuracy") if isinstance(reference, dict) else None
    return ManifestEntry(
        manifest=manifest_path,
        target=entry["target"],
        precision=entry["precision"],
        sha256=entry["sha256"],
        path=entry["path"],
        budgets=dict(entry.get("budgets") or {}),
        reference_accuracy=float(accuracy) if isinstance(accuracy, (int, float)) else None,
        metrics=dict(entry.get("metrics") or {}),
        facts={key: entry[key] for key in CandidateFacts.MANIFEST_KEYS if key in entry},
    )


def budgets_of(entry: ManifestEntry) -> Any:
    """The entry's budgets as ``config.Budgets``; InputError naming a budget this edgekit does not know."""
    from pydantic import ValidationError

    from edgekit.config import Budgets

    try:
        return Budgets(**entry.budgets)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        raise InputError(f"the budgets of {entry.path} in {entry.manifest.name} do not load here ({problems})",
                         "Use the edgekit version that made the manifest (see its toolkit.edgekit) on this device") from None
