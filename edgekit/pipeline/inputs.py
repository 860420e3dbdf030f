"""What a build starts from: the config, the target profiles, the data and output paths, all checked first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgekit import backends
from edgekit.config import ArtifactRequest, BuildConfig, TargetProfile
from edgekit.errors import InputError


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
