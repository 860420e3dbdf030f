"""Stage 2 of a build: every distinct request's candidate set, from the cache or built.

Requests that would build identical artifacts (same request, device facts
that change conversion, model variant and fidelity bar) share one
``CandidateSet``, so two targets asking for the same thing pay once. A set
comes from the content-addressed cache when an identical one was built
before (``edgekit.pipeline.cached``), else it is built here or, when several
must be built, as tasks on the executor (``edgekit.pipeline.tasks``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.artifact import Artifact
from edgekit.config import ArtifactRequest, TargetProfile
from edgekit.pipeline.candidate_set import (CandidateSet, contained, attack_record, make_candidate_set,
                                            request_key)

if TYPE_CHECKING:
    from edgekit.pipeline.prepare import Prepared
    from edgekit.variants import ModelVariant

__all__ = ["CandidateSet", "Candidates", "make_candidate_set", "request_key"]


Job = tuple[ArtifactRequest, TargetProfile, "ModelVariant"]


class Candidates:
    """Every request's ``CandidateSet`` of one build; files under ``work``.

    ``make_all`` takes each distinct set from the ``cache`` (``edgekit.cache``) or builds it, on the
    ``executor`` (``edgekit.pipeline.executor``) when several must be built; ``get`` returns a set
    (making it on first ask). ``origins`` says where each set came from ("cache" or "built").
    """

    def __init__(self, prepared: Prepared, work: Path, latency_runs: int, cache: Any = None, executor: Any = None,
                 inputs: Any = None) -> None:
        from edgekit.cache import NullCache
        from edgekit.pipeline.executor import SerialExecutor

        self.prepared = prepared
        self.work = work
        self.latency_runs = latency_runs
        self.cache = cache if cache is not None else NullCache()
        self.executor = executor if executor is not None else SerialExecutor()
        self.inputs = inputs  # BuildInputs, which workers of a parallel executor prepare from
        self.sets: dict[str, CandidateSet] = {}
        self.origins: dict[str, str] = {}
        self.attack_records: dict[Path, tuple[dict[str, float], dict[str, Any]]] = {}
        self.attack_seconds = 0.0  # time spent running the attack suite on candidates (the build log reports it)

    def get(self, request: ArtifactRequest, profile: TargetProfile, variant: ModelVariant) -> CandidateSet:
        key = request_key(request, profile, self.prepared, variant)
        if key not in self.sets:
            self.make_all([(request, profile, variant)])
        return self.sets[key]

    def make_all(self, jobs: list[Job], advance: Any = None) -> None:
        """Make every job's set not made yet: from the cache, else built (in parallel when the executor can)."""
        pending: dict[str, Job] = {}
        for request, profile, variant in jobs:
            key = request_key(request, profile, self.prepared, variant)
            if key in self.sets or key in pending:
                continue
            cached = self._cached(key, variant)
            if cached is not None:
                self.sets[key], self.origins[key] = cached, "cache"
            else:
                pending[key] = (request, profile, variant)
        parallel = self.executor.workers > 1 and len(pending) > 1 and self.inputs is not None
        made = self._fan_out(pending) if parallel else {key: self._build(key, *job) for key, job in pending.items()}
        for key, found in made.items():
            self.sets[key], self.origins[key] = found, "built"
            self._keep(key, pending[key][2], found)

    def _workdir(self, key: str) -> Path:
        workdir = self.work / hashlib.sha256(key.encode()).hexdigest()[:12]
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        return workdir

    def _cache_key(self, key: str, variant: ModelVariant) -> str:
        from edgekit.cache import cache_key
        from edgekit.pipeline.cached import candidate_key

        return cache_key(*candidate_key(key, self.prepared, variant, self.latency_runs))

    def _cached(self, key: str, variant: ModelVariant) -> CandidateSet | None:
        from edgekit.pipeline.cached import CANDIDATES, candidate_set_from

        workdir = self._workdir(key)
        record = self.cache.get(CANDIDATES, self._cache_key(key, variant), workdir)
        return candidate_set_from(record, workdir) if record is not None else None

    def _keep(self, key: str, variant: ModelVariant, found: CandidateSet) -> None:
        """Put a built set into the cache; one that failed or was skipped is tried again next time."""
        from edgekit.pipeline.cached import CANDIDATES, candidate_record

        if found.error is None and found.skipped is None and found.artifacts:
            files, record = candidate_record(found)
            self.cache.put(CANDIDATES, self._cache_key(key, variant), files, record)

    def _build(self, key: str, request: ArtifactRequest, profile: TargetProfile, variant: ModelVariant) -> CandidateSet:
        return make_candidate_set(self.prepared, request, profile, variant, self._workdir(key), self.latency_runs)

    def _fan_out(self, pending: dict[str, Job]) -> dict[str, CandidateSet]:
        """Build the pending sets as tasks on the executor; each result's files land in its work folder."""
        from edgekit.pipeline.cached import candidate_set_from
        from edgekit.pipeline.tasks import CandidateTask, rebuilt_error, run_candidate_task, write_files

        load = min(self.executor.workers, len(pending))
        root = getattr(self.cache, "root", None)
        tasks = [CandidateTask(self.inputs, request, profile, variant.name, self.latency_runs,
                               str(root) if root is not None else None, load)
                 for request, profile, variant in pending.values()]
        made = {}
        for (key, (request, _, _)), outcome in zip(pending.items(), self.executor.map(run_candidate_task, tasks),
                                                  strict=True):
            if isinstance(outcome, BaseException):
                made[key] = contained(request, outcome)  # type: ignore[arg-type]
            elif outcome.record is None:
                made[key] = CandidateSet(skipped=outcome.skipped,
                                         error=rebuilt_error(outcome.error) if outcome.error else None)
            else:
                workdir = self._workdir(key)
                write_files(outcome, workdir)
                made[key] = candidate_set_from(outcome.record, workdir)
        return made

    def attacks(self, artifact: Artifact, evaluated: int) -> tuple[dict[str, float], dict[str, Any]]:
        """The attack suite's metrics and record for one candidate, run once (on first ask) and kept.

        Asked for the shipped candidates, and for every candidate of a pool whose budgets judge attacks,
        so a search does not pay for the suite on candidates nothing will ever read it for.
        """
        if self.prepared.attacks is None:
            return {}, {}
        if artifact.path not in self.attack_records:
            started = time.perf_counter()
            self.attack_records[artifact.path] = attack_record(artifact.path, self.prepared.attacks, evaluated)
            self.attack_seconds += time.perf_counter() - started
        return self.attack_records[artifact.path]

    def fp32_latency(self, fmt: str) -> float | None:
        """Host p50 of the model's fastest FP32 candidate in ``fmt``, when this build made one."""
        from edgekit.variants import BASE

        for key, found in self.sets.items():
            facts = json.loads(key)
            if facts["model"] == BASE and facts["request"]["format"] == fmt \
                    and facts["request"]["precision"] == "fp32" and found.metrics:
                latencies = [m["latency_p50_ms"] for m in found.metrics.values() if "latency_p50_ms" in m]
                return min(latencies) if latencies else None
        return None
