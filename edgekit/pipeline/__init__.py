"""The build: model + data + target profiles → validated artifacts + manifest.

Stages, each a module over frozen records:
1. ``prepare``: load the model and data, compress, split, run the FP32
   torch reference (data that does not fit the model is refused here);
2. ``candidates``: for every distinct request across targets, build its
   candidates once with the format's backend and measure each in its own
   runtime (FP32 first, so other precisions can report their speed-up);
3. ``ship``: per target, choose one candidate per pool by the one rule in
   ``edgekit.select`` (a fixed target's pool is one request, a searched
   target's every precision × model variant of a format), copy it into
   ``OUT/<target>/`` atomically with a JSON report beside it;
4. ``manifest``: write ``OUT/manifest.json`` last, so a manifest only ever
   lists complete files. A failing target or artifact is recorded and the
   rest go on.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.artifact import ensure_writable_dir
from edgekit.pipeline.build_log import write_build_log
from edgekit.pipeline.candidates import Candidates
from edgekit.pipeline.inputs import BuildInputs, Reporter, SilentReporter, resolve_inputs, search_requests, searched
from edgekit.pipeline.manifest import assemble, check_schema, listed_files, listed_in, remove_stale, tool_versions
from edgekit.pipeline.prepare import Prepared, prepare
from edgekit.pipeline.ship import TargetOutcome, planned, pools, ship_pool
from edgekit.release.manifest import MANIFEST_NAME, write_manifest

__all__ = ["Build", "BuildInputs", "BuildResult", "Reporter", "SilentReporter", "resolve_inputs", "search_requests",
           "searched", "tool_versions"]

WORK_DIR = ".work"


@dataclass(frozen=True)
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


def build_candidates(inputs: BuildInputs, prepared: Prepared, candidates: Candidates, reporter: Reporter) -> None:
    """Stage 2 for every target: each (request, model variant) once, from the cache or built."""
    jobs = [(request, profile, variant) for profile in inputs.targets for request, variant in planned(profile, prepared)]
    reporter.start(len(jobs))
    if candidates.executor.workers > 1:
        reporter.step(f"{len(jobs)} candidate sets: from the cache, or built on the {candidates.executor.name} "
                      f"executor ({candidates.executor.workers} at once)")
        candidates.make_all(jobs)
        for _ in jobs:
            reporter.advance()
        return
    # FP32 requests first, so that other precisions can report their speed-up over FP32.
    for request, profile, variant in sorted(jobs, key=lambda job: job[0].precision != "fp32"):
        where = "" if variant is prepared.base else f" ({variant.name})"
        reporter.step(f"{profile.name}: {request.label}{where}")
        candidates.get(request, profile, variant)
        reporter.advance()


def ship_targets(inputs: BuildInputs, prepared: Prepared, candidates: Candidates,
                 reporter: Reporter) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Stage 3: every target's manifest record and shipped entries."""
    targets, artifacts = [], []
    for profile in inputs.targets:
        outcome = TargetOutcome(profile)
        for pool in pools(profile):
            ship_pool(pool, outcome, prepared, candidates, inputs.output, inputs.config.build.latency_on_host, reporter)
        targets.append(outcome.record())
        artifacts.extend(outcome.entries)
    return targets, artifacts


class Build:
    """One build run: construct, then ``run()``. ``candidates`` holds stage 2's results afterwards.

    ``cache``: an ``edgekit.cache`` store for trained models and candidate sets (None: nothing kept).
    ``executor``: where candidate sets are built (``edgekit.pipeline.executor``; None: in this process).
    Beside the manifest, ``OUT/build.json`` says where each set came from; it is not part of a release.
    """

    def __init__(self, inputs: BuildInputs, reporter: Reporter | None = None, keep_work: bool = False,
                 cache: Any = None, executor: Any = None) -> None:
        self.inputs = inputs
        self.reporter = reporter or SilentReporter()
        self.keep_work = keep_work
        self.cache = cache
        self.executor = executor
        self.candidates: Candidates | None = None

    def run(self) -> BuildResult:
        started = time.perf_counter()
        output = ensure_writable_dir(self.inputs.output)
        earlier = listed_files(output)
        # An old manifest would list files this run is about to replace.
        (output / MANIFEST_NAME).unlink(missing_ok=True)
        work = output / WORK_DIR
        cache = self._cache(work)
        prepared = prepare(self.inputs, self.reporter, cache=cache)
        self.candidates = Candidates(prepared, work, self.inputs.config.build.latency_runs, cache, self.executor,
                                     self.inputs)
        build_candidates(self.inputs, prepared, self.candidates, self.reporter)
        targets, artifacts = ship_targets(self.inputs, prepared, self.candidates, self.reporter)
        manifest = assemble(self.inputs, prepared, targets, artifacts)
        check_schema(manifest)
        write_manifest(output, manifest)
        remove_stale(output, earlier - listed_in(manifest))
        write_build_log(output, self.candidates, cache, round(time.perf_counter() - started, 3))
        self.reporter.step("writing report.html")
        from edgekit.report import write_report

        write_report(output)
        if not self.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        return BuildResult(output, manifest)

    def _cache(self, work: Path) -> Any:
        """The cache to use: the given one; a parallel build without one gets a private one for its
        duration, so its workers load the models the driver trained instead of training them again."""
        if self.cache is not None or self.executor is None or self.executor.workers == 1:
            return self.cache
        from edgekit.cache import BuildCache

        return BuildCache(work / "cache")
