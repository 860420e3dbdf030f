"""Stages 3-4 of a build, per target: pool the candidates, choose one per pool, write it with its report.

A fixed target's pool is one request's recipes for the model as given; a
searched target's pool is every precision × model variant × recipe of one
format. Both are chosen by the one rule in ``edgekit.select``; only the
objective differs (host latency for a fixed target, the search's objective
otherwise). The shipped file is copied into ``OUT/<target>/`` atomically with
a JSON report beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import backends
from edgekit.artifact import Artifact, CandidateFacts, atomic_copy, atomic_write_bytes, gzip_size_bytes, sha256_file, size_bytes
from edgekit.config import ArtifactRequest, Budgets, TargetProfile
from edgekit.errors import EdgekitError
from edgekit.pipeline.candidates import Candidates, CandidateSet
from edgekit.pipeline.inputs import Reporter, search_requests, searched
from edgekit.pipeline.prepare import Prepared
from edgekit.select import SAME_SPEED, Candidate, Measured, choose
from edgekit.validate import check_budgets, decided_by

if TYPE_CHECKING:
    from collections.abc import Mapping

    from edgekit.variants import ModelVariant


@dataclass(frozen=True)
class Pool:
    """What one choice is made among: requests × model variants of one format, and the objective."""

    format: str
    label: str  # "onnx int8" for a fixed request, "onnx search" for a searched format
    requests: tuple[ArtifactRequest, ...]
    variants: tuple[str, ...]
    objective: str = "latency"
    max_latency_vs_fp32: float | None = SAME_SPEED
    search: bool = False


@dataclass
class TargetOutcome:
    """A target's manifest record and shipped entries, filled as its pools are shipped."""

    profile: TargetProfile
    messages: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The manifest's ``targets[]`` entry: status from errors and verdicts."""
        if self.errors:
            status = "error"
        elif not self.entries:
            status = "skipped"
        else:
            status = "passed" if all(a["passed"] for a in self.entries) else "failed"
        digest = hashlib.sha256(self.profile.model_dump_json(exclude={"source"}).encode()).hexdigest()
        return {"name": self.profile.name, "profile_sha256": digest, "messages": self.messages,
                "errors": self.errors, "status": status}


def pools(profile: TargetProfile) -> list[Pool]:
    """The choices a target makes: one per requested artifact, or one per format of its search."""
    from edgekit.variants import BASE

    if not searched(profile):
        return [Pool(request.format, request.label, (request,), (BASE,)) for request in profile.artifacts]
    space = profile.search
    assert space is not None
    names = tuple(spec.name for spec in space.variants())
    return [Pool(fmt, f"{fmt} search", tuple(requests), names, space.objective, space.max_latency_vs_fp32, search=True)
            for fmt, requests in search_requests(profile).items()]


def planned(profile: TargetProfile, prepared: Prepared) -> list[tuple[ArtifactRequest, ModelVariant]]:
    """Every (request, model variant) the target needs built."""
    return [(request, prepared.variants[name]) for pool in pools(profile) for name in pool.variants
            if name in prepared.variants for request in pool.requests]


def judges_attacks(budgets: Budgets) -> bool:
    """Whether a budget reads the attack suite's figures, so every candidate must run it before choosing."""
    return budgets.max_robust_accuracy_drop is not None or budgets.max_membership_auc is not None


def measured(profile: TargetProfile, found: CandidateSet, prepared: Prepared, latency_on_host: bool,
             sets: Candidates | None = None) -> list[Measured]:
    """Each candidate's metrics with this target's budget checks, in ``found.artifacts`` order.

    Where the target's budgets judge attacks, each candidate's attack figures (from ``sets``) join its metrics.
    """
    result = []
    for artifact in found.artifacts:
        metrics = dict(found.metrics[artifact.variant])
        budgets = profile.budgets_for(artifact.precision)
        if sets is not None and judges_attacks(budgets):
            metrics.update(sets.attacks(artifact, int(metrics.get("samples", 0)))[0])
        facts = artifact.facts
        checks = check_budgets(metrics, budgets, artifact.size_bytes, facts,
                               device_measured=latency_on_host, device_name=profile.name, classes=prepared.classes)
        result.append(Measured(artifact.variant, metrics, checks, artifact.size_bytes, fp32_ratio=facts.latency_vs_fp32,
                               ratio_noise=(facts.vs_fp32 or {}).get("ratio_noise")))
    return result


@dataclass
class _Gathered:
    """A pool's candidates and where each came from, plus the requests that produced none and why."""

    candidates: list[Candidate] = field(default_factory=list)
    origin: dict[str, tuple[Artifact, ArtifactRequest, ModelVariant]] = field(default_factory=dict)
    excluded: list[dict[str, str]] = field(default_factory=list)
    problems: list[EdgekitError] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)


def _gather(pool: Pool, profile: TargetProfile, prepared: Prepared, sets: Candidates, latency_on_host: bool) -> _Gathered:
    gathered = _Gathered()
    for name in pool.variants:
        variant = prepared.variants.get(name)
        if variant is None:
            gathered.excluded.append({"candidate": name, "reason": prepared.variant_errors.get(name, "not made")})
            continue
        for request in pool.requests:
            found = sets.get(request, profile, variant)
            if found.skipped or found.error is not None:
                gathered.excluded.append({"candidate": f"{variant.name}/{request.precision}",
                                          "reason": found.skipped or found.error.message})  # type: ignore[union-attr]
                if found.error is not None:
                    gathered.problems.append(found.error)
                else:
                    gathered.skips.append(found.skipped)  # type: ignore[arg-type]
                continue
            for artifact, checked in zip(found.artifacts, measured(profile, found, prepared, latency_on_host, sets),
                                         strict=True):
                candidate = Candidate(variant.name, request.precision, checked, gzip_size_bytes(artifact.path))
                gathered.candidates.append(candidate)
                gathered.origin[candidate.key] = (artifact, request, variant)
    return gathered


def _nothing_to_ship(pool: Pool, gathered: _Gathered, outcome: TargetOutcome, reporter: Reporter) -> None:
    """Record why a pool shipped nothing: a skip when every backend was missing, else an error."""
    name = outcome.profile.name
    if not pool.requests:
        outcome.messages.append(f"{pool.label}: none of the precisions {outcome.profile.search.precisions} "  # type: ignore[union-attr]
                                f"exists for {pool.format}")
        return
    if not gathered.problems and gathered.skips and not pool.search:
        outcome.messages.append(f"{pool.label}: skipped — {gathered.skips[0]}")
        reporter.note(f"{name} {pool.label}: skipped — {gathered.skips[0]}")
        return
    reasons = "; ".join(f"{e['candidate']}: {e['reason']}" for e in gathered.excluded)
    message = gathered.problems[0].message if gathered.problems and not pool.search else reasons
    if gathered.problems:
        worst = max(gathered.problems, key=lambda e: e.exit_code)
        outcome.errors.append({"artifact": f"{pool.format} (search)" if pool.search else pool.label, "message": message,
                               "exit_code": worst.exit_code})
    outcome.messages.append(f"{pool.label}: " + (message if not pool.search else f"no candidate could be built — {reasons}"))
    reporter.note(f"{name} {pool.label}: {message}")


def ship_pool(pool: Pool, outcome: TargetOutcome, prepared: Prepared, sets: Candidates, output: Path,
              latency_on_host: bool, reporter: Reporter) -> None:
    """Choose among ``pool``'s candidates and write the winner; record a skip or error when there is none."""
    gathered = _gather(pool, outcome.profile, prepared, sets, latency_on_host)
    if not gathered.candidates:
        _nothing_to_ship(pool, gathered, outcome, reporter)
        return
    winner, record = choose(gathered.candidates, pool.objective, gathered.excluded,
                            fp32_latency_ms=sets.fp32_latency(pool.format), max_latency_vs_fp32=pool.max_latency_vs_fp32)
    artifact, request, variant = gathered.origin[winner.key]
    found, attacks = sets.attacks(artifact, int(winner.measured.metrics.get("samples", 0)))
    shipped = dataclasses.replace(winner.measured, metrics={**winner.measured.metrics, **found})
    outcome.entries.append(write_entry(request, outcome.profile, artifact, shipped, record, variant,
                                       prepared, output, search=pool.search, attacks=attacks))


def artifact_name(stem: str, request: ArtifactRequest, model_variant: str | None = None) -> str:
    """``<stem>[.<model variant>].<precision>[.io-int8]<suffix>``: a compressed variant says so in its name."""
    suffix = backends.info(request.format).suffixes[0]
    io = "" if request.io == "float" else f".io-{request.io}"
    variant = f".{model_variant}" if model_variant else ""
    return f"{stem}{variant}.{request.precision}{io}{suffix}"


def _estimate(artifact: Artifact, request: ArtifactRequest, profile: TargetProfile,
              variant: ModelVariant) -> dict[str, Any]:
    """Roofline latency estimate on the profile's device (labelled as an estimate)."""
    from edgekit.estimate import compute_precision, estimate_latency, weight_bytes

    try:
        nodes = sum(backends.inspector(request.format).inspect(artifact.path)["ops"].values())
    except EdgekitError:
        nodes = None  # the estimate is still useful without the per-node term
    # Weights are stored at the requested precision; the speed-up is that of the compute (float for weight-only).
    return estimate_latency(variant.macs, weight_bytes(variant.parameters, request.precision),
                            compute_precision(request.precision, artifact.config), profile.device, nodes=nodes)


def _entry(request: ArtifactRequest, profile: TargetProfile, chosen: Artifact, winner: Measured, relative: Path,
           destination: Path) -> dict[str, Any]:
    """The manifest's ``artifacts[]`` record of a shipped file (the fields every entry has)."""
    facts = chosen.facts
    entry: dict[str, Any] = {
        "target": profile.name,
        "format": request.format,
        "precision": request.precision,
        "io": request.io,
        "variant": chosen.variant,
        "path": relative.as_posix(),
        "report": f"{relative.as_posix()}.report.json",
        "sha256": sha256_file(destination),
        "size_bytes": size_bytes(destination),
        "runtime": backends.info(request.format).runtime,
        "min_runtime_version": facts.min_runtime_version or backends.info(request.format).min_runtime,
        "metrics": winner.metrics,
        "budgets": profile.budgets_for(request.precision).model_dump(exclude_none=True),
        "checks": [c.as_dict() for c in winner.checks],
        "quality_decided_by": decided_by(winner.checks),
        "passed": winner.passed,
    }
    for key in CandidateFacts.MANIFEST_KEYS:
        if key in chosen.details:
            entry[key] = getattr(facts, key)
    return entry


FIRMWARE_SUFFIX = ".firmware"


def firmware_library(request: ArtifactRequest, profile: TargetProfile, chosen: Artifact, destination: Path,
                     output: Path) -> dict[str, Any] | None:
    """For a microcontroller target, the firmware library beside the shipped file (``<file>.firmware/``).

    Returns the manifest's ``firmware`` record (folder, files with their sha256, arena, ops), or None when
    the target is no microcontroller or the format has no library. A library that cannot be written is
    recorded with its error; the artifact still ships.
    """
    writer = backends.firmware(request.format)
    if writer is None or profile.device.kind != "microcontroller":
        return None
    folder = destination.with_name(destination.name + FIRMWARE_SUFFIX)
    shutil.rmtree(folder, ignore_errors=True)  # an earlier build's library of this file
    try:
        library = writer.write_for_build(destination, folder, chosen.facts.micro, profile.name)
    except EdgekitError as exc:
        return {"error": exc.message}
    relative = folder.relative_to(output).as_posix()
    return {"path": relative, "name": library.name, "arena_bytes": library.arena_bytes, "ops": list(library.ops),
            "files": {f"{relative}/{path.name}": sha256_file(path) for path in library.files}}


def _emulate(entry: dict[str, Any], board: str, destination: Path, prepared: Prepared, precision: str) -> None:
    """Run the shipped file on the emulated board; its record and check join the entry (a mismatch fails it)."""
    from edgekit.pipeline.emulated import emulated_record, emulation_check

    record = emulated_record(board, destination, prepared.split.evaluation.inputs, precision)
    entry["emulation"] = record
    check = emulation_check(record)
    entry["checks"].append(check.as_dict())
    entry["passed"] = entry["passed"] and check.status != "fail"


def write_entry(request: ArtifactRequest, profile: TargetProfile, chosen: Artifact, winner: Measured,
                record: dict[str, Any], variant: ModelVariant, prepared: Prepared, output: Path,
                search: bool = False, attacks: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Copy the chosen candidate into ``OUT/<target>/`` with its JSON report; return its manifest entry.

    ``attacks``: what the attack suite achieved against it (``edgekit.attacks``), when the build ran one.
    """
    compressed = variant is not prepared.base
    relative = Path(profile.name) / artifact_name(prepared.stem, request, variant.name if compressed else None)
    destination = output / relative
    atomic_copy(chosen.path, destination)
    entry = _entry(request, profile, chosen, winner, relative, destination)
    if compressed:
        entry["model_variant"] = variant.name
        entry["compression"] = variant.compression
    if search:
        entry["search"] = {"objective": record["objective_used"], "chosen": record["chosen"], "reason": record["reason"],
                           "candidates": len(record["candidates"]),
                           "pareto": sum(1 for row in record["candidates"] if row["pareto"])}
    if attacks:
        entry["attacks"] = dict(attacks)
    firmware = firmware_library(request, profile, chosen, destination, output)
    if firmware:
        entry["firmware"] = firmware
    if profile.device.emulate is not None:
        _emulate(entry, profile.device.emulate, destination, prepared, request.precision)
    entry["estimate"] = _estimate(chosen, request, profile, variant)
    estimated = entry["estimate"].get("latency_ms")
    for check in entry["checks"]:
        if check["budget"] == "max_latency_ms" and check["status"] == "skipped" and estimated is not None:
            side = "within" if estimated <= check["limit"] else "over"
            check["note"] += f"; roofline estimate {estimated:.3g} ms is {side} the budget"
    report = {**entry, "config": chosen.config, "details": dict(chosen.details),
              "reference": dict(prepared.reference_metrics), "data_split_sha256": prepared.split.sha256,
              "search" if search else "selection": record}
    if compressed:
        report["model_variant_accuracy"] = variant.accuracy
    atomic_write_bytes(output / entry["report"], json.dumps(report, indent=2, sort_keys=True, default=str).encode())
    return entry
