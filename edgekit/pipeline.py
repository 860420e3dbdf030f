"""The build: model + data + target profiles → validated artifacts + manifest.

Order of work:
1. load the model and data, split the data, run the FP32 torch reference
   (this is also where data that does not fit the model is refused);
2. for every distinct artifact request across targets, build its candidates
   once with the format's backend and measure each in its own runtime;
3. per target, choose a candidate, copy it into ``OUT/<target>/`` atomically
   with a JSON report beside it;
4. write ``OUT/manifest.json`` last, so a manifest only ever lists complete
   files. A failing target or artifact is recorded and the rest go on.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import importlib.metadata
import json
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgekit import __version__, backends
from edgekit.artifact import Artifact, CandidateFacts, atomic_copy, atomic_write_bytes, ensure_writable_dir, sha256_file, size_bytes
from edgekit.config import ArtifactRequest, BuildConfig, TargetProfile
from edgekit.data import Dataset, Split, bind_inputs, load_npz, split
from edgekit.errors import BackendUnavailableError, DataError, EdgekitError, InputError
from edgekit.fidelity import FidelityTarget
from edgekit.native_output import native_stderr_to
from edgekit.release.manifest import MANIFEST_NAME, SCHEMA_VERSION, write_manifest
from edgekit.select import Measured, choose
from edgekit.validate import check_budgets, decided_by, emulated_sample, evaluate, measure_latency

if TYPE_CHECKING:
    from edgekit.variants import ModelVariant

WORK_DIR = ".work"


class Reporter(Protocol):
    """Where the pipeline reports progress (the CLI draws it with rich)."""

    def start(self, total: int) -> None: ...
    def step(self, description: str) -> None: ...
    def advance(self) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    def start(self, total: int) -> None: ...
    def step(self, description: str) -> None: ...
    def advance(self) -> None: ...
    def note(self, message: str) -> None: ...


@dataclass
class BuildInputs:
    """Everything resolved before any conversion: a build only starts when all of it is valid."""

    config: BuildConfig
    targets: list[TargetProfile]
    data_path: Path
    output: Path


@dataclass
class CandidateSet:
    """Built and measured candidates for one distinct request (shared by targets)."""

    artifacts: list[Artifact] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    error: EdgekitError | None = None
    skipped: str | None = None


@dataclass
class BuildResult:
    output: Path
    manifest: dict[str, Any]

    @property
    def exit_code(self) -> int:
        """0 all met; 1 a budget failed; 2 bad input for some artifact; 3 an internal failure."""
        codes = [0]
        for target in self.manifest["targets"]:
            for problem in target.get("errors", []):
                codes.append(problem["exit_code"])
        if any(not a["passed"] for a in self.manifest["artifacts"]):
            codes.append(1)
        return max(codes)


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in backends.tool_packages():
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _request_key(request: ArtifactRequest, profile: TargetProfile, model_variant: str, bar: FidelityTarget) -> str:
    """Requests with equal keys build identical artifacts, so targets share them.

    Device facts that change conversion (Core ML deployment target, the
    microcontroller op set), the model variant and the fidelity bar the
    backend searches against are part of the key.
    """
    relevant = {"request": request.model_dump(mode="json"), "min_ios": profile.device.min_ios,
                "micro": profile.device.kind == "microcontroller", "model": model_variant, "fidelity": bar.as_dict()}
    return json.dumps(relevant, sort_keys=True)


def searched(profile: TargetProfile) -> bool:
    """Whether the build searches this target's space instead of building its artifact list."""
    return profile.search is not None and profile.search.auto


def search_requests(profile: TargetProfile) -> dict[str, list[ArtifactRequest]]:
    """Per format the profile names, the requests its search tries: every allowed precision.

    Full-integer I/O (microcontrollers) exists only at int8, so such a request
    keeps its precision. A request's ``options`` stay with its own precision.
    """
    space = profile.search
    assert space is not None
    plan: dict[str, dict[str, ArtifactRequest]] = {}
    for request in profile.artifacts:
        requests = plan.setdefault(request.format, {})  # a format whose precisions all fall outside stays, empty
        allowed = backends.info(request.format).precisions
        precisions = [request.precision] if request.io != "float" else \
            [p for p in (space.precisions or allowed) if p in allowed]
        for precision in precisions:
            candidate = request if precision == request.precision else \
                ArtifactRequest(format=request.format, precision=precision, io=request.io)  # type: ignore[arg-type]
            requests.setdefault(candidate.label, candidate)
    return {fmt: list(requests.values()) for fmt, requests in plan.items()}


def _artifact_name(stem: str, request: ArtifactRequest, model_variant: str | None = None) -> str:
    """``<stem>[.<model variant>].<precision>[.io-int8]<suffix>``: a compressed variant says so in its name."""
    suffix = backends.info(request.format).suffixes[0]
    io = "" if request.io == "float" else f".io-{request.io}"
    variant = f".{model_variant}" if model_variant else ""
    return f"{stem}{variant}.{request.precision}{io}{suffix}"


def _check_schema(manifest: dict[str, Any]) -> None:
    """Refuse to write a manifest that ``verify`` and ``bundle`` would refuse to read: that is edgekit's bug."""
    from edgekit.errors import InternalError
    from edgekit.release.schema import schema_errors

    problems = schema_errors(manifest)
    if problems:
        raise InternalError(f"the build made a manifest its own schema refuses: {'; '.join(problems[:5])}")


def _first_sample(data: Dataset, batch: int | None) -> dict[str, np.ndarray]:
    """What latency is timed on: one sample, or one full batch of a fixed-batch model."""
    from edgekit.batching import pad_to

    return pad_to({k: v[: batch or 1] for k, v in data.inputs.items()}, batch or 1)[0]


class Build:
    """One build run. Construct, then ``run()``; holds the shared state between stages."""

    def __init__(self, inputs: BuildInputs, reporter: Reporter | None = None, keep_work: bool = False) -> None:
        self.inputs = inputs
        self.config = inputs.config
        self.reporter = reporter or SilentReporter()
        self.keep_work = keep_work
        self.cache: dict[str, CandidateSet] = {}

    # ---------------------------------------------------------- stage 1
    def _prepare(self) -> None:
        from edgekit import model as model_loading

        section = self.config.model
        self.reporter.step("loading model")
        if section.factory:
            self.model = model_loading.load_factory(section.factory, self.config.resolve(section.weights), self.config.base_dir)
        else:
            self.model = model_loading.load_file(self.config.resolve(section.path), section.trust_pickle)  # type: ignore[arg-type]
        self.stem = section.name or (Path(section.path).stem if section.path else section.factory.rsplit(":", 1)[-1])  # type: ignore[union-attr]
        data_section = self.config.data
        assert data_section is not None
        self.compression: list[dict[str, Any]] = []
        if self.config.prune is not None or self.config.distill is not None:
            from edgekit.compress.stage import ReporterProgress, compress_for_build, load_training_data

            train_path = self.config.resolve(data_section.train)
            assert train_path is not None  # resolve_inputs refused configs without it
            self.reporter.step("compressing the model")
            self.uncompressed = self.model
            self.model, self.compression = compress_for_build(
                self.model, load_training_data(self.model, train_path), prune=self.config.prune,
                distill=self.config.distill, base_dir=self.config.base_dir, progress=ReporterProgress(self.reporter),
            )
        self.reporter.step("loading data")
        dataset = bind_inputs(load_npz(self.inputs.data_path), list(self.model.input_names), str(self.inputs.data_path))
        if data_section.task == "classification" and dataset.y is not None and not dataset.labelled:
            raise DataError(f"{self.inputs.data_path} has 'y' of dtype {dataset.y.dtype}, not integer class labels",
                            "Store integer labels as 'y', or set [data] task = 'regression'")
        # Top-1 agreement is judged where the first output is known to be class scores: labels say so, or
        # task = "classification" does for unlabelled data (an image classifier checked on unlabelled photos).
        self.classes = dataset.labelled or data_section.task == "classification"
        self.split: Split = split(dataset, data_section.calibration_size, data_section.eval_size, data_section.seed)
        self.reporter.step("running the FP32 torch reference")
        from edgekit.variants import BASE, make_variant

        self.base = make_variant(BASE, self.model, self.split, self.compression)
        self.reference = self.base.reference
        self.output_names = tuple(section.outputs) if section.outputs else (self.model.output_names or self.base.default_output_names)
        if len(self.output_names) != len(self.reference):
            raise InputError(
                f"model.outputs names {len(self.output_names)} output(s) but the model returns {len(self.reference)}",
                "List one name per returned tensor, in order",
            )
        if dataset.labelled and self.reference[0].ndim >= 2:
            classes = int(np.prod(self.reference[0].shape[1:]))
            if int(dataset.y.max()) >= classes:  # type: ignore[union-attr]
                first = int(np.flatnonzero(dataset.y >= classes)[0])  # type: ignore[operator]
                raise DataError(f"{self.inputs.data_path}: label 'y' of sample {first} is {int(dataset.y[first])}, but "  # type: ignore[index]
                                f"the model's first output has {classes} class scores",
                                "Labels must index the first output's classes (0 .. classes-1); check 'y' and the model")
        self.reference_metrics: dict[str, float] = {}
        if self.base.accuracy is not None:
            from edgekit.validate import accuracy

            self.reference_metrics["accuracy"] = self.base.accuracy
            # Budgets measure conversion against the (compressed) model; what compression cost is recorded apart.
            if self.compression:
                before, _ = model_loading.run_reference(self.uncompressed, self.split.evaluation)
                self.reference_metrics["uncompressed_accuracy"] = accuracy(before, self.split.evaluation.y)  # type: ignore[arg-type]
        self.input_specs = tuple(
            backends.TensorSpec(name, (self.model.fixed_batch, *arr.shape[1:]),
                                str(arr.dtype if arr.dtype != np.float64 else np.float32))
            for name, arr in self.split.calibration.inputs.items()
        )
        self.variants: dict[str, ModelVariant] = {BASE: self.base}
        self.variant_errors: dict[str, str] = {}
        self._prepare_search_variants()

    def _prepare_search_variants(self) -> None:
        """Train the compressed variants the searched targets ask for (each once, shared by targets)."""
        from edgekit.variants import wanted_specs

        specs = wanted_specs([p.search for p in self.inputs.targets if searched(p)])  # type: ignore[misc]
        if not specs:
            return
        from edgekit.compress.stage import ReporterProgress, load_training_data
        from edgekit.variants import compressed_variants

        train_path = self.config.resolve(self.config.data.train if self.config.data else None)
        assert train_path is not None  # resolve_inputs refused searches with variants but no training data
        self.reporter.step(f"training {len(specs)} compressed variant(s) for the search")
        made, failed = compressed_variants(self.base, specs, load_training_data(self.model, train_path), self.split,
                                           self.config.base_dir, ReporterProgress(self.reporter))
        # The compression stages already refuse a variant whose outputs differ from the model's.
        self.variants.update(made)
        self.variant_errors.update(failed)
        for name, why in failed.items():
            self.reporter.note(f"search variant {name} left out: {why}")

    # ---------------------------------------------------------- stage 2
    def _fidelity_target(self, profile: TargetProfile, precision: str) -> FidelityTarget:
        """The quality bar a backend searches against for ``precision`` on ``profile``."""
        budgets = profile.budgets_for(precision)
        return FidelityTarget(budgets.min_cosine, budgets.min_top1_agreement if self.classes else None,
                              budgets.min_sqnr_db)

    def _candidates(self, request: ArtifactRequest, profile: TargetProfile, variant: ModelVariant) -> CandidateSet:
        key = _request_key(request, profile, variant.name, self._fidelity_target(profile, request.precision))
        if key in self.cache:
            return self.cache[key]
        found = CandidateSet()
        self.cache[key] = found
        workdir = self.work / hashlib.sha256(key.encode()).hexdigest()[:12]
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            with native_stderr_to(workdir / "converter.log"):
                found.artifacts = self._build_candidates(request, profile, workdir, variant)
                for artifact in found.artifacts:
                    found.metrics[artifact.variant] = self._measure(artifact, variant)
        except BackendUnavailableError as exc:
            found.skipped = exc.message
        except EdgekitError as exc:
            found.error = exc
        except Exception as exc:  # a converter crash must not take the other targets down
            package = (exc.name or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
            if package and package != "edgekit":  # a converter imported lazily, when a recipe needs it
                found.skipped = backends.missing_package(request.format, package).message
            else:
                from edgekit.errors import InternalError

                found.error = InternalError(f"{request.label} failed: {type(exc).__name__}: {str(exc)[:300]}")
        return found

    def _measure(self, artifact: Artifact, variant: ModelVariant) -> dict[str, float]:
        """Accuracy, fidelity and host latency of one candidate, run in its own runtime.

        Fidelity compares with the variant's own FP32 outputs (what conversion
        cost); accuracy drop with the model as given (what compression and
        conversion cost together).
        """
        session = backends.open_session(artifact.path)
        try:
            data, reference, reference_accuracy = self.split.evaluation, variant.reference, self.reference_metrics.get("accuracy")
            if getattr(session, "emulated", False):
                # The emulator is slow: a bounded, seeded sample, judged against FP32 on the same samples.
                chosen = emulated_sample(len(data), variant.macs, self.split.seed)
                data, reference = data.take(chosen), [r[chosen] for r in reference]
                if data.labelled:
                    from edgekit.validate import accuracy

                    reference_accuracy = accuracy([r[chosen] for r in self.base.reference], data.y)  # type: ignore[arg-type]
            metrics = evaluate(session, data, reference, reference_accuracy)
            metrics["samples_available"] = float(len(self.split.evaluation))
            # An emulator's speed says nothing about the device's: no number rather than a misleading one.
            if not getattr(session, "emulated", False):
                metrics.update(measure_latency(session, _first_sample(self.split.evaluation, variant.model.fixed_batch),
                                               self.config.build.latency_runs))
        finally:
            session.close()
        return metrics

    def _build_candidates(self, request: ArtifactRequest, profile: TargetProfile, workdir: Path,
                          variant: ModelVariant) -> list[Artifact]:
        module = backends.builder(request.format)
        job = backends.ExportJob(
            model=copy.deepcopy(variant.model.module),
            example_inputs=variant.example_inputs,
            inputs=self.input_specs,
            output_names=tuple(self.output_names),
            request=request,
            profile=profile,
            calibration={k: v.astype(np.float32) if v.dtype == np.float64 else v
                         for k, v in self.split.calibration.inputs.items()},
            workdir=workdir,
            stem=self.stem,
            reference=tuple(variant.calibration_reference),
            fidelity=self._fidelity_target(profile, request.precision),
            fixed_batch=variant.model.fixed_batch,
        )
        return module.build(job)

    # ---------------------------------------------------------- stage 3
    def _measured(self, profile: TargetProfile, found: CandidateSet) -> list[Measured]:
        """Each candidate's metrics with this target's budget checks, in ``found.artifacts`` order."""
        measured = []
        for artifact in found.artifacts:
            facts = artifact.facts
            checks = check_budgets(found.metrics[artifact.variant], profile.budgets_for(artifact.precision),
                                   artifact.size_bytes, facts, device_measured=self.config.build.latency_on_host,
                                   device_name=profile.name, classes=self.classes)
            measured.append(Measured(artifact.variant, found.metrics[artifact.variant], checks, artifact.size_bytes,
                                     fp32_ratio=facts.latency_vs_fp32))
        return measured

    def _ship(self, request: ArtifactRequest, profile: TargetProfile, found: CandidateSet) -> dict[str, Any]:
        """Choose among one request's candidates and write the winner."""
        measured = self._measured(profile, found)
        winner, selection = choose(measured, self._fp32_latency(request.format))
        chosen = next(a for a in found.artifacts if a.variant == winner.variant)
        return self._write(request, profile, chosen, winner, selection, self.base)

    def _ship_searched(self, profile: TargetProfile, fmt: str, requests: list[ArtifactRequest],
                       target: dict[str, Any]) -> dict[str, Any] | None:
        """Pool every precision × model variant × recipe of ``fmt`` and ship the search's winner.

        Requests that could not be built are listed in the search record; only
        when none produced a candidate does the target get an error (or a skip
        message when the backend is not installed).
        """
        from edgekit.artifact import gzip_size_bytes
        from edgekit.compress.search import SearchCandidate
        from edgekit.compress.search import choose as choose_searched

        space = profile.search
        assert space is not None
        if not requests:
            target["messages"].append(f"{fmt} search: none of the precisions {space.precisions} exists for {fmt}")
            return None
        pool: list[SearchCandidate] = []
        origin: dict[str, tuple[Artifact, ArtifactRequest, ModelVariant]] = {}
        excluded: list[dict[str, str]] = []
        problems: list[EdgekitError] = []
        for spec in space.variants():
            variant = self.variants.get(spec.name)
            if variant is None:
                excluded.append({"candidate": spec.name, "reason": self.variant_errors.get(spec.name, "not made")})
                continue
            for request in requests:
                found = self._candidates(request, profile, variant)
                label = f"{variant.name}/{request.precision}"
                if found.skipped or found.error is not None:
                    why = found.skipped or found.error.message  # type: ignore[union-attr]
                    excluded.append({"candidate": label, "reason": why})
                    if found.error is not None:
                        problems.append(found.error)
                    continue
                for artifact, measured in zip(found.artifacts, self._measured(profile, found), strict=True):
                    candidate = SearchCandidate(variant.name, request.precision, measured, gzip_size_bytes(artifact.path))
                    pool.append(candidate)
                    origin[candidate.key] = (artifact, request, variant)
        if not pool:
            reasons = "; ".join(f"{e['candidate']}: {e['reason']}" for e in excluded)
            if problems:
                worst = max(problems, key=lambda e: e.exit_code)
                target["errors"].append({"artifact": f"{fmt} (search)", "message": reasons, "exit_code": worst.exit_code})
            target["messages"].append(f"{fmt} search: no candidate could be built — {reasons}")
            self.reporter.note(f"{profile.name} {fmt} search: no candidate — {reasons}")
            return None
        winner, record = choose_searched(pool, space.objective, excluded, fp32_latency_ms=self._fp32_latency(fmt),
                                         max_latency_vs_fp32=space.max_latency_vs_fp32)
        artifact, request, variant = origin[winner.key]
        return self._write(request, profile, artifact, winner.measured, record, variant, searched=True)

    def _write(self, request: ArtifactRequest, profile: TargetProfile, chosen: Artifact, winner: Measured,
               selection: dict[str, Any], variant: ModelVariant, searched: bool = False) -> dict[str, Any]:
        """Copy the chosen candidate into ``OUT/<target>/`` with its JSON report; return its manifest entry."""
        relative = Path(profile.name) / _artifact_name(self.stem, request,
                                                       None if variant is self.base else variant.name)
        destination = self.inputs.output / relative
        atomic_copy(chosen.path, destination)
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
            "min_runtime_version": chosen.facts.min_runtime_version or backends.info(request.format).min_runtime,
            "metrics": winner.metrics,
            "budgets": profile.budgets_for(request.precision).model_dump(exclude_none=True),
            "checks": [c.as_dict() for c in winner.checks],
            "quality_decided_by": decided_by(winner.checks),
            "passed": winner.passed,
        }
        if variant is not self.base:
            entry["model_variant"] = variant.name
            entry["compression"] = variant.compression
        if searched:
            entry["search"] = {
                "objective": selection["objective_used"],
                "chosen": selection["chosen"],
                "reason": selection["reason"],
                "candidates": len(selection["candidates"]),
                "pareto": sum(1 for row in selection["candidates"] if row["pareto"]),
            }
        entry["estimate"] = self._estimate(chosen, request, profile, variant)
        estimated = entry["estimate"].get("latency_ms")
        for check in entry["checks"]:
            if check["budget"] == "max_latency_ms" and check["status"] == "skipped" and estimated is not None:
                side = "within" if estimated <= check["limit"] else "over"
                check["note"] += f"; roofline estimate {estimated:.3g} ms is {side} the budget"
        facts = chosen.facts
        for key in CandidateFacts.MANIFEST_KEYS:
            if key in chosen.details:
                entry[key] = getattr(facts, key)
        report = {**entry, "config": chosen.config, "details": dict(chosen.details),
                  "reference": self.reference_metrics, "data_split_sha256": self.split.sha256}
        report["search" if searched else "selection"] = selection
        if variant is not self.base:
            report["model_variant_accuracy"] = variant.accuracy
        atomic_write_bytes(self.inputs.output / entry["report"], json.dumps(report, indent=2, sort_keys=True, default=str).encode())
        return entry

    def _estimate(self, artifact: Artifact, request: ArtifactRequest, profile: TargetProfile,
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

    def _fp32_latency(self, fmt: str) -> float | None:
        """Host p50 of the model's fastest FP32 candidate in ``fmt``, when this build made one."""
        for key, found in self.cache.items():
            facts = json.loads(key)
            if facts["model"] == self.base.name and facts["request"]["format"] == fmt \
                    and facts["request"]["precision"] == "fp32" and found.metrics:
                latencies = [m["latency_p50_ms"] for m in found.metrics.values() if "latency_p50_ms" in m]
                return min(latencies) if latencies else None
        return None

    # ---------------------------------------------------------- run
    def _plan(self, profile: TargetProfile) -> list[tuple[ArtifactRequest, ModelVariant]]:
        """Every (request, model) the target needs built: its artifacts, or its whole search space."""
        if not searched(profile):
            return [(request, self.base) for request in profile.artifacts]
        models = [self.variants[s.name] for s in profile.search.variants() if s.name in self.variants]  # type: ignore[union-attr]
        return [(request, model) for requests in search_requests(profile).values() for request in requests
                for model in models]

    def run(self) -> BuildResult:
        output = ensure_writable_dir(self.inputs.output)
        earlier = _listed_files(output)
        # An old manifest would list files this run is about to replace.
        (output / MANIFEST_NAME).unlink(missing_ok=True)
        self.work = output / WORK_DIR
        self._prepare()
        jobs = [(profile, request, model) for profile in self.inputs.targets for request, model in self._plan(profile)]
        self.reporter.start(len(jobs))
        # Build FP32 requests first so that other precisions can report their speed-up over FP32.
        order = sorted(jobs, key=lambda job: job[1].precision != "fp32")
        for profile, request, model in order:
            where = "" if model is self.base else f" ({model.name})"
            self.reporter.step(f"{profile.name}: {request.label}{where}")
            self._candidates(request, profile, model)
            self.reporter.advance()
        artifacts: list[dict[str, Any]] = []
        targets: list[dict[str, Any]] = []
        for profile in self.inputs.targets:
            target: dict[str, Any] = {"name": profile.name, "profile_sha256": hashlib.sha256(
                profile.model_dump_json(exclude={"source"}).encode()).hexdigest(), "messages": [], "errors": []}
            if searched(profile):
                for fmt, requests in search_requests(profile).items():
                    entry = self._ship_searched(profile, fmt, requests, target)
                    if entry is not None:
                        artifacts.append(entry)
            else:
                artifacts.extend(self._ship_requests(profile, target))
            mine = [a for a in artifacts if a["target"] == profile.name]
            if target["errors"]:
                target["status"] = "error"
            elif not mine:
                target["status"] = "skipped"
            else:
                target["status"] = "passed" if all(a["passed"] for a in mine) else "failed"
            targets.append(target)
        manifest = self._manifest(targets, artifacts)
        _check_schema(manifest)
        write_manifest(output, manifest)
        _remove_stale(output, earlier - _listed_in(manifest))
        self.reporter.step("writing report.html")
        from edgekit.report import write_report

        write_report(output)
        if not self.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        return BuildResult(output, manifest)

    def _ship_requests(self, profile: TargetProfile, target: dict[str, Any]) -> list[dict[str, Any]]:
        """Ship one artifact per request of an unsearched target; record skips and errors on ``target``."""
        entries = []
        for request in profile.artifacts:
            found = self._candidates(request, profile, self.base)
            if found.skipped:
                target["messages"].append(f"{request.label}: skipped — {found.skipped}")
                self.reporter.note(f"{profile.name} {request.label}: skipped — {found.skipped}")
                continue
            if found.error is not None:
                target["messages"].append(f"{request.label}: {found.error.message}")
                target["errors"].append({"artifact": request.label, "message": found.error.message,
                                         "exit_code": found.error.exit_code})
                self.reporter.note(f"{profile.name} {request.label}: {found.error.message}")
                continue
            entries.append(self._ship(request, profile, found))
        return entries

    def _manifest(self, targets: list[dict[str, Any]], artifacts: list[dict[str, Any]]) -> dict[str, Any]:
        section = self.config.model
        evaluation = self.split.evaluation
        return {
            "schema_version": SCHEMA_VERSION,
            "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": {
                "name": self.stem,
                "version": section.version,
                "source": self.model.description,
                "source_sha256": self.model.sha256,
                "inputs": [s.as_dict() for s in self.input_specs],
                "outputs": list(self.output_names),
                "compression": self.compression,
                "macs": self.base.macs,
                "parameters": self.base.parameters,
            },
            "toolkit": {"edgekit": __version__, "python": platform.python_version(), "versions": tool_versions()},
            "data": {
                "file": self.inputs.data_path.name,
                "sha256": self.split.evaluation.sha256,
                "split_sha256": self.split.sha256,
                "seed": self.split.seed,
                "calibration_size": len(self.split.calibration),
                "evaluation_size": len(evaluation),
                "labelled": evaluation.labelled,
            },
            "reference": self.reference_metrics,
            "targets": targets,
            "artifacts": artifacts,
        }


def _listed_in(manifest: dict[str, Any]) -> set[str]:
    """Relative paths of the artifacts and reports a manifest lists."""
    paths = set()
    for artifact in manifest.get("artifacts", []):
        if isinstance(artifact, dict):
            paths.update(str(artifact[key]) for key in ("path", "report") if isinstance(artifact.get(key), str))
    return paths


def _listed_files(output: Path) -> set[str]:
    """What an earlier build's manifest in ``output`` listed (empty when there is none or it is unreadable)."""
    try:
        earlier = json.loads((output / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return _listed_in(earlier) if isinstance(earlier, dict) else set()


def _remove_stale(output: Path, relative_paths: set[str]) -> None:
    """Delete files an earlier build wrote that this build no longer ships (a target or precision dropped).

    Only paths the earlier manifest listed, and only inside ``output``: a
    rebuild never deletes what edgekit did not write.
    """
    root = output.resolve()
    for relative in relative_paths:
        path = (output / relative).resolve()
        if not path.is_relative_to(root) or path == root:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        parent = path.parent
        while parent != root and parent.is_relative_to(root) and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()  # drop a target folder left empty
            parent = parent.parent


def resolve_inputs(
    config: BuildConfig,
    target_names: list[str],
    data: Path | None,
    output: Path | None,
    auto: bool = False,
) -> BuildInputs:
    """Apply flags over the config and load every profile; all errors surface before any work.

    ``auto`` (``--auto``) searches every target, with its profile's
    ``[search]`` table or the default space.
    """
    from edgekit.config import apply_overrides, load_profile, with_search_on

    names = target_names or config.build.targets
    if not names:
        raise InputError("no targets given", "Pass --target NAME (repeatable) or list build.targets in the config")
    profiles = [apply_overrides(load_profile(name), config) for name in dict.fromkeys(names)]
    if auto:
        profiles = [with_search_on(profile) for profile in profiles]
    trains = [p.name for p in profiles if searched(p) and len(p.search.variants()) > 1]  # type: ignore[union-attr]
    if trains and (config.data is None or config.data.train is None):
        raise InputError(f"the search for {', '.join(trains)} tries compressed variants, which train on data, "
                         "but the config names no training data",
                         "Set [data] train = 'train.npz' (inputs plus integer labels 'y'), or drop width / sparsity / "
                         "macs_ratio from [search]")
    data_path = data or (config.resolve(config.data.path) if config.data else None)
    if data_path is None:
        raise InputError("no data given", "Pass --data DATA.npz or set [data] path in the config")
    if (config.prune is not None or config.distill is not None) and (config.data is None or config.data.train is None):
        raise InputError("[prune] and [distill] train on data, but the config names no training data",
                         "Set [data] train = 'train.npz' (inputs plus integer labels 'y')")
    out = output or config.resolve(config.build.output)
    if out is None:
        raise InputError("no output folder given", "Pass -o/--output DIR or set build.output in the config")
    return BuildInputs(config, profiles, data_path, out)
