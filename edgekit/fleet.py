"""A fleet build: many models × their target profiles in one run (``edgekit fleet build fleet.toml``).

The fleet file lists models, each a build config or a model source, and the
targets to build them for. Everything the file itself names is checked before
any work: its keys (unknown keys are errors naming the file and the key), each
entry's build config, each target profile, unique folder names. What a
model's build then reads (its model, weights and data) is that build's
business: a model that fails is recorded with its exit code and message and
the others go on.

Models build one after another into ``OUTPUT/<name>/``, each an ordinary
``edgekit.pipeline.Build``: its candidate sets run as tasks on the executor
the caller gives (a process pool, Ray), and every model shares the one cache.
``OUTPUT/fleet.json`` then says, per model, where its manifest is, its exit
code, how many artifacts passed and failed, and how many candidate sets came
from the cache or were built (from its ``build.json``). Like ``build.json`` it
describes a run, not a release: no manifest refers to it.

Paths in the fleet file resolve against the fleet file's folder.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from edgekit.errors import EXIT_INTERNAL, EXIT_OK, ConfigError, EdgekitError
from edgekit.strict import StrictModel, validation_problems

FLEET_LOG = "fleet.json"
ALL_TARGETS = "all"  # in a targets list: every profile shipped with edgekit
FLEET_LOG_VERSION = 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # a folder name, as a model name in a build config
_FIX = "Fix the fleet file; docs/fleet.md lists the keys it accepts"


class ModelEntry(StrictModel):
    """One ``[[models]]`` table: a build config, or a model source with its weights and data."""

    config: str | None = Field(None, description="an edgekit.toml, relative to the fleet file")
    source: str | None = Field(None, description="a model file (.pt2, TorchScript) or module:factory / file.py:factory")
    weights: str | None = Field(None, description="weights for a factory source (state_dict .pt or .safetensors)")
    data: str | None = Field(None, description="calibration/evaluation data (.npz), over the config's [data] path")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="output folder name (default: the model's name)")
    targets: list[str] | None = Field(None, min_length=1, description="replaces the fleet's targets for this model")
    auto: bool = Field(False, description="search every target's [search] space, as `edgekit build --auto`")
    trust_pickle: bool = Field(False, description="allow a pickled model file (runs code from the file)")

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        if (self.config is None) == (self.source is None):
            raise ValueError("give exactly one of config and source")
        if self.weights is not None and self.source is None:
            raise ValueError("weights go with a factory source; a build config names its own weights")
        if self.source is not None and self.data is None:
            raise ValueError(f"source '{self.source}' needs data = 'DATA.npz' (a build config names its own)")
        if self.source is not None and self.source.endswith(".toml"):
            raise ValueError(f"source '{self.source}' is a .toml file; a build config goes in config = '...'")
        return self


class FleetFile(StrictModel):
    """The fleet file as written."""

    output: str | None = Field(None, description="fleet output folder; each model builds into OUTPUT/<name>/")
    targets: list[str] = Field(default_factory=list, description="targets of every model without its own; "
                               "empty: each config's build.targets")
    models: list[ModelEntry] = Field(min_length=1)


@dataclass(frozen=True)
class FleetModel:
    """One model of a fleet, resolved: its build config (data applied), targets and folder name.

    ``targets`` are profile names or absolute .toml paths; empty means the config's own ``build.targets``.
    """

    name: str
    config: Any  # edgekit.config.BuildConfig
    targets: tuple[str, ...]
    data: Path | None
    auto: bool = False


@dataclass(frozen=True)
class Fleet:
    """A loaded, checked fleet file: where it builds and what."""

    path: Path
    output: Path
    models: tuple[FleetModel, ...]


# --------------------------------------------------------------------- loading


def load_fleet(path: Path, output: Path | None = None) -> Fleet:
    """Read and check ``path``; ``output`` (``-o``) replaces the file's ``output``.

    Raises ConfigError naming the fleet file (and the entry) for anything the file names that is wrong: unknown
    keys, a missing or invalid build config, an unknown target, two models with one folder name.
    """
    from edgekit.config import read_toml

    path = Path(path)
    try:
        document = FleetFile.model_validate(read_toml(path, "fleet"))
    except ValidationError as exc:
        raise ConfigError(f"invalid fleet file {path}: {validation_problems(exc)}", _FIX) from None
    base = path.parent.resolve()
    models = tuple(_entry(entry, index, base, document.targets, path) for index, entry in enumerate(document.models))
    _check_names(models, path)
    folder = output if output is not None else (_resolve(base, document.output) if document.output else None)
    if folder is None:
        raise ConfigError(f"{path} names no output folder", "Set output = 'build/fleet' in the fleet file or pass -o DIR")
    return Fleet(path, folder.resolve(), models)


def _entry(entry: ModelEntry, index: int, base: Path, fleet_targets: list[str], path: Path) -> FleetModel:
    """One entry resolved and checked; its errors name the fleet file and the entry."""
    label = entry.name or entry.config or entry.source
    try:
        config = _config_of(entry, base)
        name = entry.name or _default_name(entry, config)
        targets = _targets(entry.targets or fleet_targets, base)
        _check_targets(targets or tuple(config.build.targets))
    except EdgekitError as exc:
        raise ConfigError(f"{path}: models[{index}] ({label}): {exc.problem}", exc.fix or _FIX) from None
    return FleetModel(name, config, targets, _resolve(base, entry.data), entry.auto)


def _resolve(base: Path, relative: str | None) -> Path | None:
    if relative is None:
        return None
    path = Path(relative).expanduser()
    return path if path.is_absolute() else base / path


def _config_of(entry: ModelEntry, base: Path) -> Any:
    """The entry's BuildConfig, its ``data`` laid over the config's [data] path as ``build --data`` does."""
    from edgekit.commands.build import with_data
    from edgekit.config import BuildConfig, ModelSection, build_config_from

    data = _resolve(base, entry.data)
    if entry.config is not None:
        config = build_config_from(str(_resolve(base, entry.config)), entry.trust_pickle)[0]
        return with_data(config, data)
    spec = entry.source
    assert spec is not None
    weights = _resolve(base, entry.weights)
    as_file = _resolve(base, spec)
    assert as_file is not None
    # The rule of `edgekit build CONFIG_OR_MODEL`: weights, or a colon that is not part of a file's name, mean a factory.
    if weights is not None or (":" in spec and not as_file.exists()):
        model = ModelSection(name=entry.name, factory=spec, weights=str(weights) if weights else None)
    else:
        model = ModelSection(name=entry.name, path=str(as_file), trust_pickle=entry.trust_pickle)
    return with_data(BuildConfig(model=model, base_dir=base), data)


def _default_name(entry: ModelEntry, config: Any) -> str:
    """The config's model name; else the config's folder (``mlp/edgekit.toml``: mlp) or stem, the model file's stem,
    or the factory's module (``mypkg.models:create``: models; ``nets/cnn.py:create``: cnn)."""
    if config.model.name:
        name = config.model.name
    elif entry.config is not None:
        # base_dir is the config's own folder (resolved when it was read)
        name = config.base_dir.name if Path(entry.config).stem == "edgekit" else Path(entry.config).stem
    elif config.model.factory:
        module = config.model.factory.rsplit(":", 1)[0]
        name = Path(module).stem if module.endswith(".py") else module.rsplit(".", 1)[-1]
    else:
        name = Path(entry.source or "").stem
    if not re.match(NAME_PATTERN, name):
        raise ConfigError(f"cannot make a folder name from '{name}'", "Set name = '...' on the entry")
    return name


def _targets(names: list[str], base: Path) -> tuple[str, ...]:
    """Profile names as given, profile files made absolute, ``all`` expanded to every shipped profile."""
    from edgekit.config import available_profiles

    resolved: list[str] = []
    for name in names:
        if name == ALL_TARGETS:
            resolved.extend(available_profiles())
        elif name.endswith(".toml") or "/" in name:
            resolved.append(str(_resolve(base, name)))
        else:
            resolved.append(name)
    return tuple(dict.fromkeys(resolved))


def _check_targets(targets: tuple[str, ...]) -> None:
    """Every target loads (a typo fails here, before any model builds, not in the middle of the fleet)."""
    from edgekit.config import load_profile

    if not targets:
        raise ConfigError("no targets for this model", "Set targets on the entry or the fleet, or build.targets in "
                          "its config")
    for target in targets:
        load_profile(target)


def _check_names(models: tuple[FleetModel, ...], path: Path) -> None:
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise ConfigError(f"{path}: two models build into the folder '{model.name}'",
                              "Give one of them another name = '...'")
        seen.add(model.name)


# --------------------------------------------------------------------- building


@dataclass(frozen=True)
class ModelOutcome:
    """What became of one model: its exit code (as ``BuildResult.exit_code``), and its record for fleet.json."""

    name: str
    exit_code: int
    seconds: float
    error: str | None = None
    manifest: dict[str, Any] | None = None
    build_log: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The model's fleet.json entry; paths relative to the fleet output folder."""
        artifacts = self.manifest["artifacts"] if self.manifest else []
        return {
            "name": self.name,
            "output": self.name,
            "manifest": f"{self.name}/manifest.json" if self.manifest is not None else None,
            "exit_code": self.exit_code,
            "error": self.error,
            "seconds": round(self.seconds, 2),
            "artifacts": {"passed": sum(a["passed"] for a in artifacts),
                          "failed": sum(not a["passed"] for a in artifacts)},
            "candidate_sets": {"from_cache": self.build_log.get("from_cache", 0),
                               "built": self.build_log.get("built", 0)},
            "targets": target_rows(self.manifest) if self.manifest is not None else [],
        }


def target_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per target of a manifest: its status, artifacts passed and shipped, and the budgets its artifacts failed."""
    rows = []
    for target in manifest["targets"]:
        shipped = [a for a in manifest["artifacts"] if a["target"] == target["name"]]
        failed = sorted({c["budget"] for a in shipped for c in a.get("checks", []) if c["status"] == "fail"})
        rows.append({"name": target["name"], "status": target["status"], "artifacts": len(shipped),
                     "passed": sum(a["passed"] for a in shipped), "failed_budgets": failed})
    return rows


@dataclass(frozen=True)
class FleetResult:
    """Every model's outcome, and the fleet.json written from them."""

    fleet: Fleet
    models: tuple[ModelOutcome, ...]
    log: dict[str, Any]

    @property
    def log_path(self) -> Path:
        return self.fleet.output / FLEET_LOG

    @property
    def exit_code(self) -> int:
        """The worst model's: 0 all met, 1 a budget failed, 2 bad input, 3 an internal failure."""
        return max([EXIT_OK, *(m.exit_code for m in self.models)])


def build_model(model: FleetModel, output: Path, cache: Any, executor: Any, reporter: Any) -> ModelOutcome:
    """Build one model into ``output/<name>``; any failure becomes its outcome, never an exception.

    KeyboardInterrupt still stops the fleet: an interrupted build leaves no manifest, and a rerun finishes.
    """
    from edgekit.pipeline import Build, resolve_inputs

    started = time.perf_counter()
    try:
        inputs = resolve_inputs(model.config, list(model.targets), model.data, output / model.name, auto=model.auto)
        result = Build(inputs, reporter, cache=cache, executor=executor).run()
    except EdgekitError as exc:
        return ModelOutcome(model.name, exc.exit_code, time.perf_counter() - started, exc.message)
    except Exception as exc:  # noqa: BLE001 - a bug in one model's build must not take the fleet down
        message = (f"internal failure: {type(exc).__name__}: {exc}. This is a bug in edgekit or a converter; "
                   "run `edgekit build` on this model with --debug for the traceback and report it")
        return ModelOutcome(model.name, EXIT_INTERNAL, time.perf_counter() - started, message)
    return ModelOutcome(model.name, result.exit_code, time.perf_counter() - started, None, result.manifest,
                        _read_build_log(result.output))


def _read_build_log(output: Path) -> dict[str, Any]:
    """The model's OUT/build.json ({} when it has none)."""
    from edgekit.pipeline.build_log import BUILD_LOG

    try:
        document = json.loads((output / BUILD_LOG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def fleet_build(fleet: Fleet, cache: Any = None, executor: Any = None, reporter: Any = None) -> FleetResult:
    """Build every model of ``fleet`` in turn, sharing ``cache`` and ``executor``; write ``OUTPUT/fleet.json``.

    A model's failure is recorded and the others go on; only an unwritable fleet output folder (OutputError)
    or an interrupt stops the fleet. An earlier run's fleet.json is removed first, so the file on disk always
    describes a finished run.
    """
    from edgekit.artifact import ensure_writable_dir
    from edgekit.pipeline import SilentReporter

    reporter = reporter or SilentReporter()
    output = ensure_writable_dir(fleet.output)
    (output / FLEET_LOG).unlink(missing_ok=True)
    started = time.perf_counter()
    outcomes = []
    for number, model in enumerate(fleet.models, 1):
        reporter.step(f"{model.name} ({number}/{len(fleet.models)}): preparing")
        outcomes.append(build_model(model, output, cache, executor, reporter))
    log = fleet_log(fleet, outcomes, executor, cache, time.perf_counter() - started)
    write_fleet_log(output, log)
    return FleetResult(fleet, tuple(outcomes), log)


def fleet_log(fleet: Fleet, outcomes: list[ModelOutcome], executor: Any, cache: Any, seconds: float) -> dict[str, Any]:
    """The fleet.json document."""
    return {
        "version": FLEET_LOG_VERSION,
        "fleet": str(fleet.path.resolve()),
        "executor": {"name": getattr(executor, "name", "serial"), "workers": getattr(executor, "workers", 1)},
        "cache": str(getattr(cache, "root", "")) or None,
        "seconds": round(seconds, 2),
        "exit_code": max([EXIT_OK, *(o.exit_code for o in outcomes)]),
        "models": [o.record() for o in outcomes],
    }


def write_fleet_log(output: Path, log: dict[str, Any]) -> Path:
    """Write ``output/fleet.json`` atomically; return its path."""
    from edgekit.artifact import atomic_write_bytes

    path = output / FLEET_LOG
    atomic_write_bytes(path, (json.dumps(log, indent=2, sort_keys=True) + "\n").encode())
    return path
