"""Ending or steering a store's A/B experiment: promote, abort, change the candidate's share.

Each takes the store's lock, changes ``state.json`` atomically (as install
and rollback do) and appends one line to ``install.log``. See
``edgekit.release.experiment`` for what a candidate is.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgekit.errors import InputError
from edgekit.release.experiment import ExperimentResult, check_percentage, version_record
from edgekit.release.store import Store
from edgekit.release.timestamps import format_utc


def _now() -> str:
    return format_utc(int(time.time()))


def _running(store: Store) -> tuple[dict[str, Any], dict[str, Any]]:
    """The store's state and its candidate; InputError when no experiment runs."""
    state = store.state()
    if state is None or "candidate" not in state:
        raise InputError(f"no experiment is running in {store.root}",
                         "Start one with edgekit install BUNDLE --candidate PERCENT")
    return state, state["candidate"]


def promote(root: Path, device_id: str | None = None) -> ExperimentResult:
    """Make the candidate current; the control becomes the previous version (kept for rollback).

    The candidate's files are rechecked against its manifest first, so a
    damaged candidate is never promoted.
    """
    with Store.locked(root) as store:
        state, candidate = _running(store)
        version, control = candidate["version"], state["current"]
        store.check_version_intact(version)
        store.write_state({**{k: v for k, v in state.items() if k not in ("candidate", "kept")},
                           "current": version_record(candidate), "previous": control})
        store.log({"event": "experiment-promote", "time": _now(), "model": state["model"], "version": version,
                   "previous": control["version"], "percentage": candidate["percentage"], "device_id": device_id})
        store.prune({version, control["version"]})
        return ExperimentResult("promoted", state["model"], version, control["version"], None,
                                store.version_dir(version))


def abort(root: Path, reason: dict[str, Any], device_id: str | None = None,
          only_version: str | None = None) -> ExperimentResult | None:
    """Remove the candidate and block its version on this store; traffic stays on the control.

    ``reason`` goes into the install log (who aborted and why). With
    ``only_version``, abort only if that version is still the candidate and
    return None otherwise: the runtime's automatic abort must not end an
    experiment someone has since replaced or promoted.
    """
    with Store.locked(root) as store:
        state = store.state()
        if only_version is not None and (state is None or state.get("candidate", {}).get("version") != only_version):
            return None
        state, candidate = _running(store)
        version = candidate["version"]
        blocked = sorted({*state.get("rolled_back", []), version})
        store.write_state({**{k: v for k, v in state.items() if k != "candidate"}, "rolled_back": blocked})
        store.log({"event": "experiment-abort", "time": _now(), "model": state["model"], "version": version,
                   "control": state["current"]["version"], "reason": reason, "device_id": device_id})
        if version not in (state["current"]["version"], (state.get("previous") or {}).get("version"),
                           *state.get("kept", {})):
            store.remove_version(version)
        return ExperimentResult("aborted", state["model"], version, state["current"]["version"], None,
                                store.version_dir(state["current"]["version"]))


def set_percentage(root: Path, percentage: int, device_id: str | None = None) -> ExperimentResult:
    """Send ``percentage`` percent of units to the candidate (gradual rollout: raising it only adds units)."""
    check_percentage(percentage)
    with Store.locked(root) as store:
        state, candidate = _running(store)
        store.write_state({**state, "candidate": {**candidate, "percentage": percentage}})
        store.log({"event": "experiment-percentage", "time": _now(), "model": state["model"],
                   "version": candidate["version"], "from": candidate["percentage"], "to": percentage,
                   "device_id": device_id})
        return ExperimentResult("percentage", state["model"], candidate["version"], state["current"]["version"],
                                percentage, store.version_dir(candidate["version"]))
