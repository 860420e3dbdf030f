"""One request's candidate set: built by its backend and measured in its runtime, or why there is none.

``make_candidate_set`` is the unit of stage 2 (``edgekit.pipeline.candidates``
decides, per set, between the cache, this process and an executor's worker).
A failing backend is recorded on its set (skipped when not installed, an
error otherwise) and never raised, so it never takes the other requests down.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit import backends
from edgekit.artifact import Artifact
from edgekit.config import ArtifactRequest, TargetProfile
from edgekit.data import Dataset
from edgekit.errors import BackendUnavailableError, EdgekitError, InternalError
from edgekit.native_output import native_stderr_to
from edgekit.validate import emulated_sample, evaluate, measure_latency, run_batched

if TYPE_CHECKING:
    from edgekit.attacks import AttackSuite
    from edgekit.pipeline.prepare import Prepared
    from edgekit.variants import ModelVariant


@dataclass(frozen=True)
class CandidateSet:
    """Built and measured candidates for one distinct request (shared by targets); or why there are none."""

    artifacts: tuple[Artifact, ...] = ()
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    error: EdgekitError | None = None
    skipped: str | None = None


def request_key(request: ArtifactRequest, profile: TargetProfile, prepared: Prepared, variant: ModelVariant) -> str:
    """Requests with equal keys build identical artifacts, so targets share them.

    Device facts that change conversion (Core ML deployment target, the
    microcontroller op set), the model variant and the fidelity bar the
    backend searches against are part of the key.
    """
    bar = prepared.fidelity_target(profile, request.precision)
    relevant = {"request": request.model_dump(mode="json"), "min_ios": profile.device.min_ios,
                "micro": profile.device.kind == "microcontroller", "model": variant.name, "fidelity": bar.as_dict()}
    return json.dumps(relevant, sort_keys=True)


def first_sample(data: Dataset, batch: int | None) -> dict[str, np.ndarray]:
    """What latency is timed on: one sample, or one full batch of a fixed-batch model."""
    from edgekit.batching import pad_to

    return pad_to({k: v[: batch or 1] for k, v in data.inputs.items()}, batch or 1)[0]


# An emulated artifact runs the attack suite on an eighth of the samples its evaluation used (at least 16):
# the suite is about ten copies of the attacked samples, and the emulator dominates a build's time.
EMULATED_ATTACK_SHARE = 8
EMULATED_ATTACK_MIN = 16


def attack_record(path: Path, suite: AttackSuite, evaluated: int) -> tuple[dict[str, float], dict[str, Any]]:
    """What the attack suite achieves against the artifact at ``path`` (run in its own runtime): metrics and record.

    ``evaluated``: how many samples its evaluation used (an emulated artifact attacks an eighth of them).
    """
    from edgekit.attacks.assess import assess

    session = backends.open_session(path)
    try:
        emulated = getattr(session, "emulated", False)
        count = max(EMULATED_ATTACK_MIN, evaluated // EMULATED_ATTACK_SHARE) if emulated else None
        return assess(lambda inputs: run_batched(session, Dataset(inputs, None)), suite, count)
    finally:
        session.close()


def measure(artifact: Artifact, prepared: Prepared, variant: ModelVariant, latency_runs: int) -> dict[str, float]:
    """Accuracy, fidelity and host latency of one candidate, run in its own runtime.

    Fidelity compares with the variant's own FP32 outputs (what conversion
    cost); accuracy drop with the model as given (what compression and
    conversion cost together).
    """
    session = backends.open_session(artifact.path)
    try:
        data, reference = prepared.split.evaluation, variant.reference
        reference_accuracy = prepared.reference_metrics.get("accuracy")
        emulated = getattr(session, "emulated", False)
        if emulated:
            # The emulator is slow: a bounded, seeded sample, judged against FP32 on the same samples.
            chosen = emulated_sample(len(data), variant.macs, prepared.split.seed)
            data, reference = data.take(chosen), [r[chosen] for r in reference]
            if data.labelled:
                from edgekit.validate import accuracy

                reference_accuracy = accuracy([r[chosen] for r in prepared.base.reference], data.y)  # type: ignore[arg-type]
        metrics = evaluate(session, data, reference, reference_accuracy)
        metrics["samples_available"] = float(len(prepared.split.evaluation))
        # An emulator's speed says nothing about the device's: no number rather than a misleading one.
        if not emulated:
            metrics.update(measure_latency(session, first_sample(prepared.split.evaluation, variant.model.fixed_batch),
                                           latency_runs))
    finally:
        session.close()
    return metrics


def export_job(request: ArtifactRequest, profile: TargetProfile, prepared: Prepared, variant: ModelVariant,
               workdir: Path) -> backends.ExportJob:
    """What the backend builds from: the variant's torch module, inputs, calibration data and quality bar."""
    return backends.ExportJob(
        model=copy.deepcopy(variant.model.module),
        example_inputs=variant.example_inputs,
        inputs=prepared.input_specs,
        output_names=prepared.output_names,
        request=request,
        profile=profile,
        calibration={k: v.astype(np.float32) if v.dtype == np.float64 else v
                     for k, v in prepared.split.calibration.inputs.items()},
        workdir=workdir,
        stem=prepared.stem,
        reference=tuple(variant.calibration_reference),
        fidelity=prepared.fidelity_target(profile, request.precision),
        fixed_batch=variant.model.fixed_batch,
    )


def contained(request: ArtifactRequest, exc: Exception) -> CandidateSet:
    """A converter crash as a recorded outcome: a lazily imported package missing is a skip, anything else an error."""
    if isinstance(exc, BackendUnavailableError):
        return CandidateSet(skipped=exc.message)
    if isinstance(exc, EdgekitError):
        return CandidateSet(error=exc)
    package = (exc.name or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
    if package and package != "edgekit":  # a converter imported lazily, when a recipe needs it
        return CandidateSet(skipped=backends.missing_package(request.format, package).message)
    return CandidateSet(error=InternalError(f"{request.label} failed: {type(exc).__name__}: {str(exc)[:300]}"))


def make_candidate_set(prepared: Prepared, request: ArtifactRequest, profile: TargetProfile, variant: ModelVariant,
                       workdir: Path, latency_runs: int, under_load: int = 1) -> CandidateSet:
    """Build one request's candidates into ``workdir`` and measure each; a failure is recorded, never raised.

    ``under_load`` > 1: that many tasks ran at once, so host timings are marked ``timed_under_load``.
    """
    try:
        with native_stderr_to(workdir / "converter.log"):
            artifacts = tuple(backends.build(export_job(request, profile, prepared, variant, workdir)))
            metrics = {a.variant: measure(a, prepared, variant, latency_runs) for a in artifacts}
    except Exception as exc:  # a converter crash must not take the other targets down
        return contained(request, exc)
    if under_load > 1:
        for values in metrics.values():
            values["timed_under_load"] = float(under_load)
    return CandidateSet(artifacts, metrics)
