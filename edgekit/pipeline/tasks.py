"""One candidate set built in another process: the task a parallel executor (process pool, Ray) runs.

The worker loads the model and data the way the driver did (``prepare``,
once per worker process; the models the build trained come from the cache the
driver filled), builds and measures the set in a scratch folder, and sends
back the record and the files' bytes, so a worker on another machine needs
no shared disk. The driver writes the files into its work folder and keeps
the set in the cache. Exceptions travel as plain fields: an ``EdgekitError``
subclass is rebuilt by name on the driver's side.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import errors
from edgekit.config import ArtifactRequest, TargetProfile
from edgekit.pipeline.inputs import BuildInputs, SilentReporter

_PREPARED: dict[str, Any] = {}  # per worker process: the prepared build, by its inputs


@dataclass(frozen=True)
class CandidateTask:
    """What a worker needs to build one request's candidate set of one model variant."""

    inputs: BuildInputs
    request: ArtifactRequest
    profile: TargetProfile
    variant: str
    latency_runs: int
    cache_root: str | None  # the build's cache (the trained variants are there); None: no cache
    under_load: int = 1  # tasks timed at once with this one (1: alone)


@dataclass(frozen=True)
class TaskResult:
    """A built set as data: its cache record, its files as bytes (relative path -> content), or why not."""

    record: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    skipped: str | None = None
    error: tuple[str, str, str] | None = None  # (EdgekitError subclass name, problem, fix or "")


def _prepared(task: CandidateTask) -> Any:
    """The build as ``prepare`` made it in the driver (attacks left out: only the driver runs them)."""
    from edgekit.cache import BuildCache, NullCache
    from edgekit.pipeline.prepare import prepare

    config = task.inputs.config
    key = json.dumps([config.model_dump(mode="json"), str(config.base_dir), str(task.inputs.data_path),
                      [p.model_dump(mode="json") for p in task.inputs.targets]], sort_keys=True)
    if key not in _PREPARED:
        quiet = config.model_copy(update={"attacks": config.attacks.model_copy(update={"enabled": False})})
        cache = BuildCache(Path(task.cache_root)) if task.cache_root else NullCache()
        _PREPARED.clear()  # one build at a time per worker: keep memory bounded
        _PREPARED[key] = prepare(dataclasses.replace(task.inputs, config=quiet), SilentReporter(), cache=cache)
    return _PREPARED[key]


def _read_files(files: dict[str, Path]) -> dict[str, bytes]:
    contents = {}
    for name, path in files.items():
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                contents[f"{name}/{child.relative_to(path).as_posix()}"] = child.read_bytes()
        else:
            contents[name] = path.read_bytes()
    return contents


def run_candidate_task(task: CandidateTask) -> TaskResult:
    """Build and measure one candidate set in this (worker) process; never raises for a converter's failure."""
    from edgekit.pipeline.cached import candidate_record
    from edgekit.pipeline.candidate_set import make_candidate_set

    prepared = _prepared(task)
    variant = prepared.variants.get(task.variant)
    if variant is None:
        reason = prepared.variant_errors.get(task.variant, "not made")
        return TaskResult(error=("InternalError", f"model variant {task.variant} is missing in the worker: {reason}", ""))
    with tempfile.TemporaryDirectory(prefix="edgekit-task-") as scratch:
        found = make_candidate_set(prepared, task.request, task.profile, variant, Path(scratch), task.latency_runs,
                                   task.under_load)
        if found.skipped is not None:
            return TaskResult(skipped=found.skipped)
        if found.error is not None:
            return TaskResult(error=(type(found.error).__name__, found.error.problem, found.error.fix or ""))
        files, record = candidate_record(found)
        return TaskResult(record, _read_files(files))


def rebuilt_error(error: tuple[str, str, str]) -> errors.EdgekitError:
    """The worker's error as the same ``EdgekitError`` subclass (InternalError when the name is unknown)."""
    name, problem, fix = error
    kind = getattr(errors, name, None)
    if not (isinstance(kind, type) and issubclass(kind, errors.EdgekitError)):
        kind = errors.InternalError
    return kind(problem, fix or None)


def write_files(result: TaskResult, folder: Path) -> None:
    """Put a result's files where the cache record expects them (``folder/<name>``, folders recreated)."""
    from edgekit.artifact import atomic_write_bytes

    root = folder.resolve()
    for relative, content in result.files.items():
        path = (folder / relative).resolve()
        if not path.is_relative_to(root):
            raise errors.InternalError(f"a worker sent a file outside its folder: {relative}")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, content)
