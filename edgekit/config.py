"""Typed, strict configuration: target profiles, budgets and build configs.

Profiles and build configs are TOML files validated by pydantic models that
forbid unknown keys, so a typo is an error naming the key and the file rather
than a silently ignored setting. All models are frozen: a stage never edits
the config it was given.
"""

from __future__ import annotations

import difflib
import importlib.resources
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from edgekit.compress.config import DistillConfig, PruneConfig, SearchSpace
from edgekit.errors import ConfigError, TargetNotFoundError
from edgekit.strict import StrictModel, validation_problems

Precision = Literal["fp32", "fp16", "int8", "dynamic-int8", "int4"]
DeviceKind = Literal["sbc", "phone", "microcontroller", "gpu-sbc", "desktop"]
TaskKind = Literal["auto", "classification", "regression", "embedding"]
EmulatedBoard = Literal["pi4", "pi5"]  # edgekit.emulation.devices

# The shipped profiles: the top-level targets/ folder, installed as the edgekit.targets package.
PROFILES_DIR = Path(str(importlib.resources.files("edgekit.targets")))
SEMVER = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"




class Budgets(StrictModel):
    """Limits an artifact must meet on its target. Unset means "no limit".

    Accuracy budgets need labelled data; the fidelity budgets (cosine, max abs
    error, SQNR) compare against the FP32 torch model and need no labels.
    """

    max_size_mb: float | None = Field(None, gt=0)
    max_accuracy_drop: float | None = Field(None, ge=0, le=1)
    max_latency_ms: float | None = Field(None, gt=0)
    max_ram_mb: float | None = Field(None, gt=0, description="peak RSS of the process running the model, MiB")
    min_cosine: float | None = Field(None, ge=-1, le=1)
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    max_abs_error: float | None = Field(None, ge=0)
    min_sqnr_db: float | None = None
    max_flash_kb: float | None = Field(None, gt=0)
    max_arena_kb: float | None = Field(None, gt=0)
    max_robust_accuracy_drop: float | None = Field(
        None, ge=-1, le=1, description="FP32 robust accuracy minus the artifact's, under attacks crafted on FP32 "
        "at [attacks] judged_eps (edgekit.attacks)")
    max_membership_auc: float | None = Field(
        None, ge=0, le=1, description="AUC of a loss-threshold membership-inference attack (0.5: no leakage)")


class QualityBar(StrictModel):
    """Fidelity budgets for one precision: how close to the FP32 model its artifacts must stay.

    Judged on the evaluation split whether or not it has labels; a budget set
    in ``[budgets]`` wins over the bar of the artifact's precision. The default
    bars set no ``max_accuracy_drop``: a profile sets one per precision when
    its precisions cost different amounts of accuracy (int4 more than int8).
    """

    max_accuracy_drop: float | None = Field(None, ge=0, le=1, description="needs labelled evaluation data")
    min_cosine: float | None = Field(None, ge=-1, le=1)
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    min_sqnr_db: float | None = None

    def over(self, base: QualityBar) -> QualityBar:
        """``base`` with every value set here replacing its own."""
        return base.merged(self)


# What healthy artifacts of each precision reach, measured on the samples and the real-size zoo
# (benchmarks/bench_zoo.py), with the bar set just below it; see docs/fidelity.md for the figures.
DEFAULT_QUALITY: dict[str, QualityBar] = {
    "fp32": QualityBar(min_cosine=0.9999, min_top1_agreement=0.99, min_sqnr_db=40.0),
    "fp16": QualityBar(min_cosine=0.999, min_top1_agreement=0.98, min_sqnr_db=30.0),
    "int8": QualityBar(min_cosine=0.99, min_top1_agreement=0.95, min_sqnr_db=15.0),
    "dynamic-int8": QualityBar(min_cosine=0.99, min_top1_agreement=0.95, min_sqnr_db=15.0),
    "int4": QualityBar(min_cosine=0.97, min_top1_agreement=0.90, min_sqnr_db=10.0),
}


class Fidelity(StrictModel):
    """Per-precision quality bars (``[fidelity.int8]`` in a profile or build config)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    fp32: QualityBar = DEFAULT_QUALITY["fp32"]
    fp16: QualityBar = DEFAULT_QUALITY["fp16"]
    int8: QualityBar = DEFAULT_QUALITY["int8"]
    dynamic_int8: QualityBar = Field(DEFAULT_QUALITY["dynamic-int8"], alias="dynamic-int8")
    int4: QualityBar = DEFAULT_QUALITY["int4"]

    @field_validator("fp32", "fp16", "int8", "dynamic_int8", "int4", mode="after")
    @classmethod
    def _over_default(cls, bar: QualityBar, info: ValidationInfo) -> QualityBar:
        """A table that sets some values keeps the default bar's other values."""
        return bar.over(DEFAULT_QUALITY[str(info.field_name).replace("_", "-")])

    def bar(self, precision: str) -> QualityBar:
        return getattr(self, precision.replace("-", "_"))

    def layered(self, override: FidelityOverride | None) -> Fidelity:
        """These bars with an override's values laid over them, value by value."""
        if override is None:
            return self
        update = {}
        for name in override.model_fields_set:
            update[name] = getattr(override, name).over(getattr(self, name))
        return self.model_copy(update=update)


class FidelityOverride(StrictModel):
    """A partial ``[fidelity]`` table: only the precisions and values it names change."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    fp32: QualityBar = QualityBar()
    fp16: QualityBar = QualityBar()
    int8: QualityBar = QualityBar()
    dynamic_int8: QualityBar = Field(QualityBar(), alias="dynamic-int8")
    int4: QualityBar = QualityBar()


class Device(StrictModel):
    """What the device is; figures feed latency estimates and memory checks."""

    kind: DeviceKind
    arch: str
    cores: int = Field(ge=1)
    ram_mb: float = Field(gt=0)
    gops: float | None = Field(None, gt=0, description="sustained int8/fp32 GOP/s for estimates")
    mem_bandwidth_gbps: float | None = Field(None, gt=0)
    flash_mb: float | None = Field(None, gt=0)
    os: str | None = None
    min_ios: str | None = Field(None, description="minimum iOS for Core ML deployment targets")
    emulate: EmulatedBoard | None = Field(None, description="build: run each shipped artifact on this emulated "
                                          "board (QEMU, its own aarch64 runtime) and compare with the host")


class ArtifactRequest(StrictModel):
    """One artifact a profile wants: a format at a precision.

    ``io`` is the dtype of the model's inputs and outputs: "float" keeps the
    interface float even for integer models; "int8" asks for full-integer I/O
    (microcontrollers), with scale and zero point recorded in the manifest.
    """

    format: str = Field(description="a registered backend format (edgekit.backends.REGISTRY)")
    precision: Precision
    io: Literal["float", "int8"] = "float"
    options: dict[str, Any] = Field(default_factory=dict, description="the format's options (backends/<format>/options.py)")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from edgekit import backends  # light: the registry imports no converter

        if value not in backends.REGISTRY:
            raise ValueError(f"unknown format '{value}'; known formats: {', '.join(backends.formats())}")
        return value

    @model_validator(mode="after")
    def _valid_options(self) -> ArtifactRequest:
        """The options table is checked against the format's model when the profile loads, not mid-build."""
        from edgekit import backends

        try:
            backends.parse_options(self.format, self.options, self.precision, self.label)
        except ConfigError as exc:
            raise ValueError(f"{exc.problem} ({exc.fix})" if exc.fix else exc.problem) from None
        return self

    @property
    def label(self) -> str:
        suffix = "" if self.io == "float" else f"-io{self.io}"
        return f"{self.format}-{self.precision}{suffix}"


class TargetProfile(StrictModel):
    """A device profile: what it is, the artifacts it wants, the budgets they must meet."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    device: Device
    artifacts: list[ArtifactRequest] = Field(min_length=1)
    budgets: Budgets = Budgets()
    fidelity: Fidelity = Field(Fidelity(), description="quality bars per precision, against the FP32 model")
    search: SearchSpace | None = Field(None, description="what `build --auto` may try for this device")
    source: str | None = Field(None, description="file the profile was read from (set by the loader)")

    def budgets_for(self, precision: str) -> Budgets:
        """The budgets an artifact of ``precision`` must meet: ``budgets`` over the precision's quality bar."""
        bar = self.fidelity.bar(precision)
        implied = {k: v for k, v in bar.model_dump().items() if v is not None and getattr(self.budgets, k) is None}
        return self.budgets.model_copy(update=implied)

    @model_validator(mode="after")
    def _no_duplicate_artifacts(self) -> TargetProfile:
        labels = [a.label for a in self.artifacts]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"artifacts listed twice: {', '.join(dupes)}")
        return self


class ModelSection(StrictModel):
    """Where the model comes from. Exactly one of ``path`` and ``factory``.

    ``path``: a torch.export program (.pt2) or TorchScript file; a pickled
    whole module only with ``trust_pickle = true``.
    ``factory``: ``package.module:function`` or ``file.py:function`` returning
    an ``nn.Module``; ``weights`` is then a state_dict (.pt, loaded with
    ``weights_only=True``) or a .safetensors file.
    """

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = Field("0.0.0", pattern=SEMVER, description="semantic version, compared by devices")
    path: str | None = None
    factory: str | None = None
    weights: str | None = None
    trust_pickle: bool = False
    outputs: list[str] | None = Field(None, description="names for the model's outputs, in order")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.path is None) == (self.factory is None):
            raise ValueError("give exactly one of model.path and model.factory")
        if self.weights is not None and self.factory is None:
            raise ValueError("model.weights needs model.factory (a .pt2 or TorchScript file carries its own weights)")
        return self


class DataSection(StrictModel):
    """The data used to calibrate and evaluate; split deterministically."""

    path: str
    train: str | None = Field(None, description="training data for fine-tuning and distillation")
    calibration_size: int = Field(256, ge=1)
    eval_size: int | None = Field(None, ge=1)
    seed: int = 0
    task: TaskKind = Field("auto", description="classification: the first output is class scores (top-1 agreement "
                           "is judged, with or without labels); embedding / regression: it is not; auto: labels decide")


class TargetOverride(StrictModel):
    """Per-target changes a build config may make to a shipped profile."""

    budgets: Budgets | None = None
    fidelity: FidelityOverride | None = None
    artifacts: list[ArtifactRequest] | None = None
    search: SearchSpace | None = None
    emulate: EmulatedBoard | None = Field(None, description="validate this target's artifacts on an emulated board")


class AttacksSection(StrictModel):
    """What attackers are simulated against every artifact (``edgekit.attacks``).

    Robustness: FGSM and PGD examples crafted on the FP32 torch model at each
    ``eps`` (in input units; by default 1 %, 3 % and 10 % of the calibration
    data's range), transferred to every artifact, plus Gaussian noise and a
    contrast change. Membership inference: a loss-threshold attack between
    ``[data] train`` samples and held-out evaluation samples.
    """

    enabled: bool = True
    eps: list[float] | None = Field(None, min_length=1, max_length=8, description="perturbation sizes, input units")
    judged_eps: float | None = Field(None, gt=0, description="the eps max_robust_accuracy_drop is judged at "
                                     "(default: the middle of eps)")
    samples: int = Field(256, ge=16, le=4096, description="evaluation samples attacked, and members / non-members")
    pgd_steps: int = Field(10, ge=1, le=200)
    bootstrap: int = Field(200, ge=20, le=10000, description="resamples of the membership AUC's 95 % interval")
    seed: int = 0

    @field_validator("eps")
    @classmethod
    def _positive(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(e <= 0 for e in value):
            raise ValueError("every eps must be > 0 (input units)")
        return sorted(set(value)) if value is not None else None

    @model_validator(mode="after")
    def _judged_in_eps(self) -> AttacksSection:
        if self.judged_eps is not None and self.eps is not None and self.judged_eps not in self.eps:
            raise ValueError(f"judged_eps {self.judged_eps} is not one of eps {self.eps}")
        return self


class BuildSection(StrictModel):
    targets: list[str] = Field(default_factory=list)
    output: str | None = None
    latency_runs: int = Field(50, ge=1)
    latency_on_host: bool = Field(
        False, description="check latency and RAM budgets against host measurements (building on the device itself)"
    )


class BuildConfig(StrictModel):
    """A reproducible build: ``edgekit build edgekit.toml``. Relative paths resolve against ``base_dir``."""

    model: ModelSection
    data: DataSection | None = None
    build: BuildSection = BuildSection()
    budgets: Budgets | None = Field(None, description="override applied to every target")
    fidelity: FidelityOverride | None = Field(None, description="quality bars per precision, over every target's")
    overrides: dict[str, TargetOverride] = Field(default_factory=dict)
    prune: PruneConfig | None = Field(None, description="prune the model before export (edgekit.compress)")
    distill: DistillConfig | None = Field(None, description="distill the model into a student before export")
    search: SearchSpace | None = Field(None, description="budget-driven search, applied over every profile's [search]")
    attacks: AttacksSection = Field(AttacksSection(), description="adversarial robustness and membership inference")
    base_dir: Path = Field(Path("."), exclude=True)

    def resolve(self, relative: str | None) -> Path | None:
        """Resolve a path from the config against the config file's folder."""
        if relative is None:
            return None
        path = Path(relative).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    @field_validator("overrides")
    @classmethod
    def _override_names(cls, value: dict[str, TargetOverride]) -> dict[str, TargetOverride]:
        for name in value:
            if not name:
                raise ValueError("empty target name in [overrides]")
        return value


# --------------------------------------------------------------------- loading


def _format_validation_error(err: ValidationError, source: str) -> str:
    return f"{source}: {validation_problems(err)}"


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Read a TOML file or raise ConfigError saying which file and what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}", "Check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc}", "Check the file is readable UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", "Fix the syntax at the position shown") from None


def parse_profile(data: dict[str, Any], source: str) -> TargetProfile:
    """Validate a profile dictionary; errors name the offending keys and ``source``."""
    try:
        return TargetProfile.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(
            f"invalid target profile {_format_validation_error(exc, source)}",
            "Fix the profile; `edgekit targets show NAME` prints a valid one",
        ) from None


def available_profiles() -> list[str]:
    """Names of the profiles shipped with edgekit, sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> TargetProfile:
    """Load a shipped profile by name, or a profile file by path (``*.toml``)."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if text.endswith(".toml") or candidate.exists() or "/" in text:
        if not candidate.is_file():
            raise TargetNotFoundError(f"target profile file not found: {text}", "Check the path to the .toml file")
        return parse_profile(read_toml(candidate, "target profile"), str(candidate))
    path = PROFILES_DIR / f"{text}.toml"
    if not path.is_file():
        names = available_profiles()
        close = difflib.get_close_matches(text, names, n=3, cutoff=0.5)
        hint = f"Did you mean {' or '.join(close)}?" if close else f"Known targets: {', '.join(names)}"
        raise TargetNotFoundError(f"unknown target '{text}'", f"{hint} (`edgekit targets` lists them; a path to a .toml also works)")
    return parse_profile(read_toml(path, "target profile"), str(path))


def apply_overrides(profile: TargetProfile, config: BuildConfig | None) -> TargetProfile:
    """The profile with the build config's global and per-target overrides applied."""
    if config is None:
        return profile
    budgets = profile.budgets.merged(config.budgets)
    fidelity = profile.fidelity.layered(config.fidelity)
    artifacts = profile.artifacts
    search = _merge_search(profile.search, config.search)
    override = config.overrides.get(profile.name)
    if override is not None:
        budgets = budgets.merged(override.budgets)
        fidelity = fidelity.layered(override.fidelity)
        artifacts = override.artifacts or artifacts
        search = _merge_search(search, override.search)
        if override.emulate is not None:
            device = profile.device.model_copy(update={"emulate": override.emulate})
            return profile.model_copy(update={"budgets": budgets, "fidelity": fidelity, "artifacts": artifacts,
                                              "search": search, "device": device})
    return profile.model_copy(update={"budgets": budgets, "fidelity": fidelity, "artifacts": artifacts, "search": search})


def _merge_search(base: SearchSpace | None, override: SearchSpace | None) -> SearchSpace | None:
    return override if base is None else base.merged(override)


def with_search_on(profile: TargetProfile) -> TargetProfile:
    """The profile with its search switched on (``--auto``), using the default space if it has none."""
    space = (profile.search or SearchSpace()).model_copy(update={"auto": True})
    return profile.model_copy(update={"search": space})


def load_build_config(path: Path) -> BuildConfig:
    """Load ``edgekit.toml``; relative paths inside it resolve against its folder."""
    return read_build_config(path)[0]


def read_build_config(path: Path, set_aside: tuple[str, ...] = ()) -> tuple[BuildConfig, dict[str, Any]]:
    """``edgekit.toml`` as a BuildConfig, and the raw tables named in ``set_aside`` (taken out before validation).

    ``edgekit prune`` / ``distill`` set aside ``[prune]`` / ``[distill]`` to lay their command-line flags over them
    before those tables are validated.
    """
    data = read_toml(path, "build config")
    raw = {key: data.pop(key) for key in set_aside if key in data}
    try:
        config = BuildConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid build config {_format_validation_error(exc, str(path))}",
            "Fix the config; see README.md and docs/compression.md for the keys it accepts",
        ) from None
    # A target given as a profile file is overridden by the file's stem (profiles are named after their files).
    listed = {*config.build.targets, *(Path(t).stem for t in config.build.targets if t.endswith(".toml"))}
    unknown = [name for name in config.overrides if name not in available_profiles() and name not in listed]
    if unknown:
        raise ConfigError(
            f"{path}: [overrides] names targets that are neither shipped nor listed in build.targets: {', '.join(unknown)}",
            "Fix the target names",
        )
    return config.model_copy(update={"base_dir": path.parent.resolve()}), raw


def build_config_from(source: str, trust_pickle: bool = False, weights: Path | None = None,
                      set_aside: tuple[str, ...] = ()) -> tuple[BuildConfig, dict[str, Any]]:
    """The BuildConfig a command's CONFIG_OR_MODEL names: an edgekit.toml, a model file, or module:factory.

    Returns it with the raw tables ``set_aside`` from a config file (see ``read_build_config``).
    """
    path = Path(source)
    if path.suffix == ".toml":
        config, raw = read_build_config(path, set_aside)
        if trust_pickle:
            config = config.model_copy(update={"model": config.model.model_copy(update={"trust_pickle": True})})
        return config, raw
    if weights is not None or (":" in source and not path.exists()):
        model = ModelSection(factory=source, weights=str(weights) if weights else None)
    else:
        model = ModelSection(path=source, trust_pickle=trust_pickle)
    return BuildConfig(model=model, base_dir=Path.cwd()), {}
