"""A/B experiments in a model store: a candidate release served beside the current one (the control).

``edgekit install BUNDLE --candidate PERCENT`` verifies a bundle exactly as
an install does, then keeps it as the store's *candidate* instead of making
it current. ``state.json`` records it next to ``current``::

    "candidate": {<version record>, "percentage": 10, "abort": {...}, "started_at": "..."}

The device runtime (``edgekit.runtime``) sends a unit (user, session,
request) to the candidate when ``rollout.selected(model, candidate version,
unit id, percentage)``: the release rollout's bucketing, so the same unit
always lands in the same arm and raising the percentage only adds units.

An experiment ends in one of three ways, each logged in ``install.log``:
``promote`` (the candidate becomes current, the control is kept as previous),
``abort`` (by hand or by the runtime's abort rule: the candidate is removed
and blocked like a rolled-back version, so an updater does not bring it back
unless forced), or a plain install or rollback, which replaces the control
and ends the experiment with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import InputError

# What the runtime judges before aborting: too few requests say nothing.
DEFAULT_MIN_REQUESTS = 50
_RULE_KEYS = ("error_rate", "p99_ms", "p99_ratio", "p99_slack_ms", "min_requests")


@dataclass(frozen=True)
class AbortRule:
    """When the runtime aborts a candidate: any bound exceeded once ``min_requests`` reached the candidate.

    ``error_rate``: share of candidate requests that raised (0..1);
    ``p99_ms``: the candidate's p99 latency in ms; ``p99_ratio``: its p99
    over the control's (both arms measured on this device, same load), broken
    only when the candidate is also ``p99_slack_ms`` slower: a p99 of a
    sub-millisecond model moves by multiples with one scheduler hiccup.
    ``None`` leaves a bound unchecked.
    """

    error_rate: float | None = 0.05
    p99_ms: float | None = None
    p99_ratio: float | None = 3.0
    p99_slack_ms: float | None = 1.0
    min_requests: int = DEFAULT_MIN_REQUESTS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, raw: Any) -> AbortRule | None:
        """The rule stored in ``state.json``, or None when it is damaged."""
        if not isinstance(raw, dict) or set(raw) != set(_RULE_KEYS):
            return None
        try:
            return cls.parse({k: v for k, v in raw.items()})
        except InputError:
            return None

    @classmethod
    def parse(cls, settings: dict[str, Any]) -> AbortRule:
        """A rule from ``{name: value}`` (values numbers, numeric strings or None); InputError naming a bad one."""
        unknown = sorted(set(settings) - set(_RULE_KEYS))
        if unknown:
            raise InputError(f"unknown abort rule {', '.join(unknown)}",
                             f"Use {', '.join(_RULE_KEYS)} (e.g. --abort-if error_rate=0.05)")
        values: dict[str, Any] = {}
        for name, value in settings.items():
            if value is None or value == "off":
                values[name] = None
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number) or number < 0 or (name == "error_rate" and number > 1):
                raise InputError(f"abort rule {name}={value!r} is not a valid bound",
                                 "Give error_rate as 0..1, the others as positive numbers, or off")
            values[name] = number
        if "min_requests" in values:
            count = values["min_requests"]
            if count is None or not float(count).is_integer() or count < 1:
                raise InputError(f"abort rule min_requests={settings['min_requests']!r} is not a positive count",
                                 "Give the number of candidate requests to see before judging, e.g. 50")
            values["min_requests"] = int(count)
        return cls(**values)


def parse_rule_options(options: tuple[str, ...]) -> AbortRule:
    """An abort rule from repeated ``NAME=VALUE`` command-line options (defaults for the rest)."""
    settings: dict[str, Any] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep:
            raise InputError(f"--abort-if {option!r} is not NAME=VALUE", "Write e.g. --abort-if error_rate=0.05")
        settings[name.strip()] = value.strip()
    return AbortRule.parse(settings)


@dataclass(frozen=True)
class CandidatePlan:
    """How ``install --candidate`` runs the experiment: the candidate's share of units and its abort rule."""

    percentage: int
    abort: AbortRule

    def __post_init__(self) -> None:
        check_percentage(self.percentage)


def check_percentage(percentage: int) -> None:
    """InputError unless ``percentage`` is a candidate's share of units, 1..100."""
    if not 1 <= percentage <= 100:
        raise InputError(f"candidate percentage {percentage} is outside 1..100",
                         "Send 1 to 100 percent of units to the candidate")


def candidate_problem(record: Any) -> str | None:
    """What is wrong with a stored candidate record's experiment fields, or None."""
    if not isinstance(record.get("percentage"), int) or not 1 <= record["percentage"] <= 100:
        return "the candidate's percentage is not 1..100"
    if AbortRule.from_state(record.get("abort")) is None:
        return "the candidate's abort rule is damaged"
    if not isinstance(record.get("started_at"), str):
        return "the candidate has no start time"
    return None


def experiment_fields(plan: CandidatePlan, started_at: str) -> dict[str, Any]:
    """The experiment fields a candidate record carries in ``state.json``."""
    return {"percentage": plan.percentage, "abort": plan.abort.as_dict(), "started_at": started_at}


def version_record(candidate: dict[str, Any]) -> dict[str, Any]:
    """A candidate's plain version record (what ``current`` holds once it is promoted)."""
    return {k: v for k, v in candidate.items() if k not in ("percentage", "abort", "started_at")}


@dataclass(frozen=True)
class ExperimentResult:
    """What promote, abort or a percentage change did to the store's experiment."""

    action: str
    model: str
    version: str
    control: str
    percentage: int | None
    path: Path

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}
