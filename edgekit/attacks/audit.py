"""Run the attack suite on an existing build: ``edgekit audit-model BUILD_DIR CONFIG_OR_MODEL``.

The suite is crafted on the same FP32 model (its sha256 must match the
manifest's ``model.source_sha256``) and the same data split (``split_sha256``),
then every artifact the manifest lists runs it from its own bytes (each
file's sha256 is checked first). The manifest entries, each artifact's
``.report.json`` and ``report.html`` are updated in place: metrics, the
``attacks`` records, the two attack budgets' checks and the verdicts. A
build that is already bundled keeps its signed manifest; bundle again to
ship the audited one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgekit.artifact import atomic_write_bytes, sha256_file
from edgekit.config import Budgets, BuildConfig
from edgekit.errors import ArtifactError, DataError, InputError
from edgekit.pipeline.inputs import BuildInputs, Reporter
from edgekit.release.manifest import MANIFEST_NAME, read_manifest, write_manifest

ATTACK_BUDGETS = ("max_robust_accuracy_drop", "max_membership_auc")


def attack_budgets(entry: dict[str, Any], config: BuildConfig, given: Mapping[str, float | None]) -> Budgets:
    """An entry's attack budgets: those recorded by the build, then the config's [budgets] and its
    [overrides.<target>.budgets], then ``given`` (command-line options); later layers win."""
    values = {key: (entry.get("budgets") or {}).get(key) for key in ATTACK_BUDGETS}
    override = config.overrides.get(str(entry.get("target")))
    for layer in (config.budgets, override.budgets if override else None):
        if layer is not None:
            values.update({k: getattr(layer, k) for k in ATTACK_BUDGETS if getattr(layer, k) is not None})
    values.update({k: v for k, v in given.items() if v is not None})
    return Budgets(**{k: v for k, v in values.items() if v is not None})


def _same_build(manifest: dict[str, Any], prepared: Any, build_dir: Path) -> None:
    """Refuse a model or data split other than the ones the build measured: the audit would not be of it."""
    recorded = (manifest.get("model") or {}).get("source_sha256")
    if recorded != prepared.model.sha256:
        raise InputError(f"{build_dir} was built from a model with sha256 {str(recorded)[:16]}…, not this one "
                         f"({prepared.model.sha256[:16]}…)", "Pass the model (or config) the build was made from")
    split = (manifest.get("data") or {}).get("split_sha256")
    if split != prepared.split.sha256:
        raise DataError(f"{build_dir} was validated on another data split (split sha256 {str(split)[:16]}…)",
                        "Pass the same data file, [data] seed, calibration_size and eval_size as the build")


def _assess_entry(build_dir: Path, entry: dict[str, Any], suite: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """Run the suite on one listed artifact, after checking its bytes are the ones the manifest names."""
    from edgekit.pipeline.candidate_set import attack_record

    path = build_dir / str(entry["path"])
    if not path.exists() or sha256_file(path) != entry.get("sha256"):
        raise ArtifactError(f"{path} is missing or differs from the manifest's sha256",
                            "Rebuild, or restore the file the build wrote")
    return attack_record(path, suite, int((entry.get("metrics") or {}).get("samples", 0)))


def _apply(entry: dict[str, Any], metrics: dict[str, float], record: dict[str, Any], budgets: Budgets) -> None:
    """Write the audit's figures, checks and verdict into a manifest entry (previous attack figures replaced)."""
    from edgekit.validate import attack_checks

    kept = {k: v for k, v in (entry.get("metrics") or {}).items()
            if not k.startswith(("robust_", "membership_", "noise_", "contrast_", "attacked_"))}
    entry["metrics"] = {**kept, **metrics}
    entry["attacks"] = record
    entry["budgets"] = {**(entry.get("budgets") or {}), **budgets.model_dump(exclude_none=True)}
    checks = [c for c in entry.get("checks") or [] if c.get("budget") not in ATTACK_BUDGETS]
    entry["checks"] = checks + [c.as_dict() for c in attack_checks(budgets, entry["metrics"])]
    entry["passed"] = all(c.get("status") != "fail" for c in entry["checks"])


def _update_targets(manifest: dict[str, Any]) -> None:
    for target in manifest.get("targets") or []:
        mine = [a for a in manifest["artifacts"] if a.get("target") == target.get("name")]
        if target.get("status") in ("passed", "failed") and mine:
            target["status"] = "passed" if all(a["passed"] for a in mine) else "failed"


def _update_report(build_dir: Path, entry: dict[str, Any]) -> None:
    """Carry the audit into the artifact's ``.report.json`` (left alone when the build wrote none)."""
    path = build_dir / str(entry.get("report", ""))
    if not entry.get("report") or not path.is_file():
        return
    report = json.loads(path.read_text(encoding="utf-8"))
    report.update({k: entry[k] for k in ("metrics", "attacks", "budgets", "checks", "passed")})
    atomic_write_bytes(path, json.dumps(report, indent=2, sort_keys=True, default=str).encode())


def audit_build(build_dir: Path, config: BuildConfig, data: Path | None, reporter: Reporter,
                given: Mapping[str, float | None]) -> dict[str, Any]:
    """Run the attack suite on every artifact of ``build_dir``; returns the updated manifest (also written)."""
    from edgekit.attacks.assess import describe
    from edgekit.pipeline.manifest import check_schema
    from edgekit.pipeline.prepare import prepare
    from edgekit.report import write_report

    path = build_dir / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{build_dir} has no {MANIFEST_NAME}", "Give the output folder of an `edgekit build`")
    manifest = read_manifest(path)
    data_path = data or (config.resolve(config.data.path) if config.data else None)
    if data_path is None:
        raise InputError("no data given", "Pass --data DATA.npz (the build's data) or set [data] path in the config")
    config = config.model_copy(update={"attacks": config.attacks.model_copy(update={"enabled": True})})
    prepared = prepare(BuildInputs(config, [], data_path, build_dir), reporter, variants=False)
    _same_build(manifest, prepared, build_dir)
    reporter.start(len(manifest.get("artifacts") or []))
    for entry in manifest.get("artifacts") or []:
        reporter.step(f"{entry.get('target')}: {entry.get('format')} {entry.get('precision')}")
        metrics, record = _assess_entry(build_dir, entry, prepared.attacks)
        _apply(entry, metrics, record, attack_budgets(entry, config, given))
        _update_report(build_dir, entry)
        reporter.advance()
    manifest["attacks"] = describe(prepared.attacks)  # type: ignore[arg-type]
    _update_targets(manifest)
    check_schema(manifest)
    write_manifest(build_dir, manifest)
    write_report(build_dir)
    return manifest
