"""Rebuild a manifest's artifacts from their recorded inputs and recipes, and prove (or disprove) their hashes.

``rebuild(manifest, inputs)`` loads the model and data again (their sha256 must
be the recorded ones, or the difference is named as the cause), and for every
artifact entry builds exactly the recorded winner: the same request of the
same target, the same model variant (retrained, seeded), the same recipe. No
candidate is ranked and nothing comes from a cache: host timing cannot
change what is rebuilt, and every byte is made again. Each artifact is then
compared by sha256 with the manifest, and so are the firmware files shipped
beside it. A difference is explained where the records allow: an input file
that changed, a tool version, a profile; when none of them differs, the
converter itself did not reproduce its bytes (docs/reproducibility.md).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__, backends
from edgekit.artifact import atomic_copy, sha256_file
from edgekit.config import ArtifactRequest, TargetProfile
from edgekit.errors import EdgekitError, InputError
from edgekit.pipeline.inputs import BuildInputs, Reporter, search_requests
from edgekit.pipeline.ship import FIRMWARE_SUFFIX

NONDETERMINISTIC = ("no recorded input differs: the {fmt} converter did not reproduce its bytes "
                    "(see docs/reproducibility.md for the sources edgekit normalises)")


@dataclass
class Rebuilt:
    """One manifest entry rebuilt: the recorded and the new sha256, and why they differ when they do."""

    target: str
    path: str
    recorded: str
    rebuilt: str | None = None
    causes: list[str] = field(default_factory=list)
    firmware: dict[str, str] = field(default_factory=dict)  # firmware file -> "same" | "differs" | "missing"

    @property
    def same(self) -> bool:
        return self.rebuilt == self.recorded and all(v == "same" for v in self.firmware.values())

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "same": self.same}


def input_differences(manifest: dict[str, Any], prepared: Any) -> list[str]:
    """What differs between the recorded inputs and tools and the ones given now (empty: none)."""
    causes = []
    model, data = manifest.get("model") or {}, manifest.get("data") or {}
    if model.get("source_sha256") != prepared.model.sha256:
        causes.append(f"model: sha256 {str(model.get('source_sha256'))[:12]}… recorded, "
                      f"{prepared.model.sha256[:12]}… given")
    if data.get("sha256") != prepared.split.evaluation.sha256:
        causes.append(f"data file {data.get('file')}: sha256 {str(data.get('sha256'))[:12]}… recorded, "
                      f"{str(prepared.split.evaluation.sha256)[:12]}… given")
    elif data.get("split_sha256") != prepared.split.sha256:
        causes.append("data split: the seed, calibration_size or eval_size differs from the build's")
    recorded = (manifest.get("toolkit") or {}).get("versions") or {}
    installed = backends.tool_versions()
    for name in sorted(set(recorded) | set(installed)):
        if recorded.get(name) != installed.get(name):
            causes.append(f"tool {name}: {recorded.get(name, 'absent')} recorded, {installed.get(name, 'absent')} "
                          "installed")
    if (manifest.get("toolkit") or {}).get("edgekit") != __version__:
        causes.append(f"edgekit {manifest['toolkit'].get('edgekit')} recorded, {__version__} installed")
    return causes


def _profile_changes(manifest: dict[str, Any], profiles: dict[str, TargetProfile]) -> dict[str, str]:
    """Per target, why its profile is not the recorded one (missing, or another sha256)."""
    import hashlib

    changes = {}
    for record in manifest.get("targets") or []:
        profile = profiles.get(record["name"])
        if profile is None:
            changes[record["name"]] = f"profile {record['name']} was not given (pass it with -t)"
            continue
        digest = hashlib.sha256(profile.model_dump_json(exclude={"source"}).encode()).hexdigest()
        if record.get("profile_sha256") not in (None, digest):
            changes[record["name"]] = f"profile {record['name']} differs from the one the build used"
    return changes


def request_for(profile: TargetProfile, entry: dict[str, Any]) -> ArtifactRequest:
    """The request that produced an entry: the profile's own (with its options) or its search's."""
    wanted = (entry["format"], entry["precision"], entry.get("io", "float"))
    requests = list(profile.artifacts)
    if profile.search is not None:
        requests += [r for rs in search_requests(profile).values() for r in rs]
    for request in requests:
        if (request.format, request.precision, request.io) == wanted:
            return request
    return ArtifactRequest(format=entry["format"], precision=entry["precision"], io=entry.get("io", "float"))


def _firmware(entry: dict[str, Any], rebuilt: Path, profile: TargetProfile, scratch: Path) -> dict[str, str]:
    """Regenerate the entry's firmware library from the rebuilt file and compare each recorded file."""
    recorded = (entry.get("firmware") or {}).get("files") or {}
    writer = backends.firmware(entry["format"])
    if not recorded or writer is None:
        return {}
    shipped = scratch / "firmware" / Path(entry["path"]).name  # the shipped file's name names the library
    atomic_copy(rebuilt, shipped)
    library = writer.write_for_build(shipped, shipped.with_name(shipped.name + FIRMWARE_SUFFIX), entry.get("micro"),
                                     profile.name)
    made = {path.name: sha256_file(path) for path in library.files}
    verdicts = {}
    for name, digest in recorded.items():
        found = made.get(Path(name).name)
        verdicts[name] = "missing" if found is None else "same" if found == digest else "differs"
    return verdicts


def _build_set(request: ArtifactRequest, profile: TargetProfile, prepared: Any, variant: Any, scratch: Path,
               made: dict[str, Any]) -> Any:
    """The request's candidates for ``variant``, built once per distinct request (targets share them)."""
    from edgekit.native_output import native_stderr_to
    from edgekit.pipeline.candidate_set import export_job, request_key

    key = request_key(request, profile, prepared, variant)
    if key not in made:
        workdir = Path(tempfile.mkdtemp(prefix="rebuild-", dir=scratch))
        try:
            with native_stderr_to(workdir / "converter.log"):
                made[key] = tuple(backends.build(export_job(request, profile, prepared, variant, workdir)))
        except EdgekitError as exc:
            made[key] = exc
    return made[key]


def _rebuild_entry(entry: dict[str, Any], profile: TargetProfile, prepared: Any, scratch: Path,
                   keep: Path | None, sets: dict[str, Any]) -> tuple[str | None, list[str], dict[str, str]]:
    """The rebuilt sha256 of one entry's recorded recipe (None when it was not produced), problems, firmware."""
    from edgekit.variants import BASE

    variant = prepared.variants.get(entry.get("model_variant", BASE))
    if variant is None:
        return None, [f"model variant {entry.get('model_variant')} could not be made again"], {}
    made = _build_set(request_for(profile, entry), profile, prepared, variant, scratch, sets)
    if isinstance(made, EdgekitError):
        return None, [f"the recipe failed: {made.message}"], {}
    chosen = next((a for a in made if a.variant == entry["variant"]), None)
    if chosen is None:
        return None, [f"recipe {entry['variant']} was not produced (made: {', '.join(a.variant for a in made)})"], {}
    if keep is not None:
        atomic_copy(chosen.path, keep / entry["path"])
    return sha256_file(chosen.path), [], _firmware(entry, chosen.path, profile, scratch / entry["target"])


def rebuild(manifest: dict[str, Any], inputs: BuildInputs, reporter: Reporter, keep: Path | None = None) -> list[Rebuilt]:
    """Rebuild every artifact of ``manifest`` from ``inputs`` (the build's model, data and profiles)."""
    from edgekit.cache import NullCache
    from edgekit.pipeline.prepare import prepare

    config = inputs.config.model_copy(update={"attacks": inputs.config.attacks.model_copy(update={"enabled": False})})
    prepared = prepare(dataclasses.replace(inputs, config=config), reporter, cache=NullCache())
    common = input_differences(manifest, prepared)
    profiles = {p.name: p for p in inputs.targets}
    changed = _profile_changes(manifest, profiles)
    entries = manifest.get("artifacts") or []
    reporter.start(len(entries))
    results, sets = [], {}
    with tempfile.TemporaryDirectory(prefix="edgekit-rebuild-") as scratch:
        for entry in entries:
            reporter.step(f"{entry['target']}: {entry['format']} {entry['precision']} {entry['variant']}")
            result = Rebuilt(entry["target"], entry["path"], entry["sha256"])
            profile = profiles.get(entry["target"])
            if profile is None:
                result.causes.append(changed.get(entry["target"], f"profile {entry['target']} was not given"))
            else:
                result.rebuilt, problems, result.firmware = _rebuild_entry(entry, profile, prepared, Path(scratch),
                                                                               keep, sets)
                result.causes += problems
            if not result.same and not result.causes:
                result.causes = common + ([changed[entry["target"]]] if entry["target"] in changed else []) or \
                    [NONDETERMINISTIC.format(fmt=entry["format"])]
            results.append(result)
            reporter.advance()
    return results


def check_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """The manifest, or InputError when it is not a build manifest with artifacts."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise InputError(f"{path} is not an edgekit build manifest", "Give the manifest.json a build wrote")
    return manifest
