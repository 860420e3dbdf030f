"""``Model``: the installed release of a store, served with A/B arms, an audit trail and an optional cache.

    model = Model.open("/var/lib/models/digits")
    answer = model.predict({"x": batch}, unit_id="user-42")
    answer.outputs["logits"], answer.provenance.version

``predict`` checks the inputs against the manifest's interface, sends the
unit to an arm (``arms.assign``), runs the arm's artifact (or answers from
the cache), records the arm's statistics, appends one record to the
hash-chained audit log and returns the outputs with their provenance. When a
candidate fails a request, the control answers it instead; when the
candidate breaks its abort rule, the model aborts the experiment (in the
store too, when it may write there) and all traffic returns to the control.

The model follows the store: it rereads ``state.json`` at most every
``refresh_s`` seconds and swaps releases when an install, promote or abort
changed them, so ``edgekit install`` and ``edgekit experiment`` act on a
running server without a restart.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError, PredictionError
from edgekit.release.experiment import AbortRule
from edgekit.release.store import STATE_NAME, Store
from edgekit.runtime.arms import CANDIDATE, CONTROL, Arm, assign, breach, with_batcher
from edgekit.runtime.cache import OutputCache
from edgekit.runtime.digest import input_digest
from edgekit.runtime.interface import DEFAULT_RANGE_TOLERANCE, Interface
from edgekit.runtime.loaded import Provenance, load_release
from edgekit.runtime.recording import audit_record

AUDIT_NAME = "predictions.log"


@dataclass(frozen=True)
class ServeOptions:
    """How a store is served. ``audit_log`` None turns the audit trail off (``Model.open`` defaults it to
    ``STORE/predictions.log``); ``cache_size`` 0 turns the cache off; ``max_batch`` None serves each
    request alone; ``range_tolerance`` None skips the calibrated-range check."""

    prefer: tuple[str, ...] = ()
    threads: int = 1
    audit_log: Path | None = None
    audit_max_bytes: int = 16 * 1024 * 1024
    audit_sync_every: int = 1
    cache_size: int = 0
    max_batch: int | None = None
    max_wait_ms: float = 2.0
    range_tolerance: float | None = DEFAULT_RANGE_TOLERANCE
    auto_abort: bool = True
    device_id: str | None = None
    refresh_s: float = 1.0
    top_k: int = 5


@dataclass(frozen=True)
class Prediction:
    """A request's outputs (by output name) and where they came from."""

    outputs: dict[str, np.ndarray]
    provenance: Provenance
    input_digest: str
    latency_ms: float | None
    cached: bool
    audit_seq: int | None = None
    fallback_from: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: outputs as nested lists."""
        return {"outputs": {name: value.tolist() for name, value in self.outputs.items()},
                "provenance": self.provenance.as_dict(), "input_digest": self.input_digest,
                "latency_ms": self.latency_ms, "cached": self.cached, "audit_seq": self.audit_seq,
                "fallback_from": self.fallback_from}


@dataclass
class _Serving:
    """What the store names now: the arms in service and the state they were read from."""

    control: Arm
    candidate: Arm | None = None
    state_stamp: tuple[int, int] = (0, 0)


class Model:
    """A store's installed release(s), ready to predict; use ``Model.open``. Thread-safe."""

    def __init__(self, root: Path, options: ServeOptions) -> None:
        self.root = root
        self.options = options
        self._lock = threading.RLock()
        self._retired: list[Arm] = []
        self._aborted_versions: set[str] = set()
        self._aborted: list[dict[str, Any]] = []
        self._checked_at = 0.0
        self.cache = OutputCache(options.cache_size) if options.cache_size else None
        self.audit = None
        if options.audit_log is not None:
            from edgekit.runtime.audit import AuditLog

            self.audit = AuditLog(options.audit_log, max_bytes=options.audit_max_bytes,
                                  sync_every=options.audit_sync_every)
        self._serving = self._load(Store(root).state())

    @classmethod
    def open(cls, store: Path | str, *, audit_log: Path | str | None | bool = True, **options: Any) -> Model:
        """Serve the store's current release (and its A/B candidate, if one runs); see ``ServeOptions``.

        ``audit_log``: True (default) logs to ``STORE/predictions.log``, a path logs there, None or False
        turns the log off. InputError when nothing is installed or no artifact runs here.
        """
        root = Path(store)
        log = root / AUDIT_NAME if audit_log is True else (Path(audit_log) if audit_log else None)
        return cls(root, ServeOptions(audit_log=log, **options))

    # ------------------------------------------------------------------ loading

    def _load(self, state: dict[str, Any] | None) -> _Serving:
        if state is None:
            raise InputError(f"no model is installed in {self.root}", "Install one with edgekit install")
        target = (state.get("device") or {}).get("target")
        options = self.options
        record = state["current"]
        control = Arm(CONTROL, load_release(self.root / "versions" / record["version"], record, CONTROL, target,
                                            options.prefer, options.threads))
        serving = _Serving(with_batcher(control, options.max_batch, options.max_wait_ms), state_stamp=self._stamp())
        running = state.get("candidate")
        if running is not None and running["version"] not in self._aborted_versions:
            try:
                release = load_release(self.root / "versions" / running["version"], running, CANDIDATE, target,
                                       options.prefer, options.threads)
            except InputError as exc:
                # A candidate that cannot even load must not take the control down with it.
                self._aborted_versions.add(running["version"])
                self._aborted.append({"event": "candidate-not-loaded", "time": _now(), "version": running["version"],
                                      "reason": exc.message})
                return serving
            arm = Arm(CANDIDATE, release, percentage=running["percentage"],
                      rule=AbortRule.from_state(running["abort"]))
            serving.candidate = with_batcher(arm, options.max_batch, options.max_wait_ms)
        return serving

    def _stamp(self) -> tuple[int, int]:
        try:
            status = (self.root / STATE_NAME).stat()
        except OSError:
            return (0, 0)
        return (status.st_mtime_ns, status.st_ino)

    def refresh(self, force: bool = False) -> bool:
        """Reload when ``state.json`` changed (checked at most every ``refresh_s``); True when releases changed."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.options.refresh_s:
            return False
        self._checked_at = now
        with self._lock:
            if not force and self._stamp() == self._serving.state_stamp:
                return False
            old = self._serving
            state = Store(self.root).state()
            same = (state is not None and state["current"]["version"] == old.control.release.version
                    and (state.get("candidate") or {}).get("version") == (old.candidate.release.version
                                                                           if old.candidate else None))
            if same:
                self._serving.state_stamp = self._stamp()  # e.g. a percentage change: keep the sessions
                if old.candidate is not None and state is not None:
                    old.candidate.percentage = state["candidate"]["percentage"]
                return False
            self._serving = self._load(state)
            self._retired += [arm for arm in (old.control, old.candidate) if arm is not None]
            if self.cache is not None:
                self.cache.clear()  # a version changed: never answer from another version's outputs
            return True

    # --------------------------------------------------------------- predicting

    def interface(self) -> Interface:
        """The inputs and outputs of the control (what every request must match)."""
        return self._serving.control.release.interface

    def arm_for(self, unit_id: str | None) -> str:
        """The arm (``control`` or ``candidate``) that serves ``unit_id`` now."""
        serving = self._serving
        return assign(serving.control.release.provenance.model, serving.candidate, unit_id)

    def predict(self, inputs: Mapping[str, Any] | Any, unit_id: str | None = None) -> Prediction:
        """Answer one request (any number of samples); see the module docstring.

        InputError for inputs that break the interface (nothing recorded: a
        refused request is not a prediction); PredictionError when the
        control's runtime fails.
        """
        self.refresh()
        serving = self._serving
        arm = serving.candidate if assign(serving.control.release.provenance.model, serving.candidate,
                                          unit_id) == CANDIDATE else serving.control
        assert arm is not None
        feeds = arm.release.interface.check(inputs, self.options.range_tolerance)
        try:
            return self._answer(arm, feeds, unit_id)
        except PredictionError:
            if arm.name != CANDIDATE:
                raise
            feeds = serving.control.release.interface.check(inputs, self.options.range_tolerance)
            return self._answer(serving.control, feeds, unit_id, fallback_from=arm.release.version)
        finally:
            if arm.name == CANDIDATE:
                self._judge(arm, serving.control)

    def _answer(self, arm: Arm, feeds: dict[str, np.ndarray], unit_id: str | None,
                fallback_from: str | None = None) -> Prediction:
        release = arm.release
        digest = input_digest(feeds)
        sha = release.provenance.artifact_sha256
        outputs = self.cache.get(sha, digest) if self.cache is not None else None
        cached, latency_ms, error = outputs is not None, None, None
        if outputs is None:
            start = time.perf_counter()
            try:
                outputs = arm.run(feeds)
            except Exception as exc:  # noqa: BLE001 - any runtime failure is the artifact's, reported as such
                error = f"{type(exc).__name__}: {exc}"
            latency_ms = (time.perf_counter() - start) * 1000
            if outputs is not None and self.cache is not None:
                self.cache.put(sha, digest, outputs)
        arm.stats.record(latency_ms, outputs, cached=cached)
        seq = self._log(audit_record(_now(), arm.name, release.provenance, digest, unit_id, outputs,
                                     release.interface.outputs, latency_ms, cached, error, self.options.top_k,
                                     fallback_from))
        if outputs is None:
            raise PredictionError(f"{release.provenance.model} {release.version} ({release.provenance.artifact}) "
                                  f"failed on a valid input: {error}",
                                  "Roll back or abort this release; the artifact, not the input, is at fault")
        names = release.interface.outputs or tuple(f"output_{i}" for i in range(len(outputs)))
        return Prediction(dict(zip(names, outputs, strict=False)), release.provenance, digest, latency_ms, cached,
                          seq, fallback_from)

    def _log(self, record: dict[str, Any]) -> int | None:
        if self.audit is None:
            return None
        return int(self.audit.append(record)["seq"])

    # -------------------------------------------------------------- experiment

    def _judge(self, candidate: Arm, control: Arm) -> None:
        """Abort the experiment when the candidate broke its rule (and automatic abort is on)."""
        if not self.options.auto_abort or candidate.rule is None:
            return
        broken = breach(candidate.rule, candidate.stats, control.stats)
        if broken is not None:
            self.abort({"by": "runtime", **broken}, version=candidate.release.version)

    def abort(self, reason: dict[str, Any] | str = "by hand", version: str | None = None) -> bool:
        """Stop the candidate (``version``: only if it is still that one); True when this call stopped it.

        Traffic returns to the control at once in this process. The abort is
        also written to the store (blocking the version, ``release.candidate.abort``)
        when this process may; if not, the audit log says so and the store
        keeps the experiment for its owner to end.
        """
        from edgekit.release import candidate as store_candidate

        why = reason if isinstance(reason, dict) else {"by": "hand", "note": reason}
        with self._lock:
            arm = self._serving.candidate
            if arm is None or (version is not None and arm.release.version != version):
                return False
            self._serving.candidate = None
            self._aborted_versions.add(arm.release.version)
            self._retired.append(arm)
        try:
            store_candidate.abort(self.root, why, self.options.device_id, only_version=arm.release.version)
            persisted: bool | str = True
        except (InputError, OSError) as exc:
            persisted = f"not written to the store: {getattr(exc, 'problem', exc)}"
        event = {"event": "experiment-abort", "time": _now(), "version": arm.release.version, "reason": why,
                 "persisted": persisted, "candidate": arm.describe()}
        self._aborted.append(event)
        self._log(event)
        with self._lock:
            self._serving.state_stamp = self._stamp()
        return True

    def stats(self) -> dict[str, Any]:
        """Per-arm figures, the experiment, aborts so far and the cache's hit rate (JSON-able)."""
        serving = self._serving
        arms = {CONTROL: serving.control.describe()}
        if serving.candidate is not None:
            arms[CANDIDATE] = serving.candidate.describe()
            rule = serving.candidate.rule
            arms[CANDIDATE]["abort_rule"] = rule.as_dict() if rule else None
        return {"model": serving.control.release.provenance.model, "store": str(self.root), "arms": arms,
                "aborted": list(self._aborted), "cache": self.cache.stats() if self.cache is not None else None,
                "audit_log": str(self.options.audit_log) if self.options.audit_log else None}

    def close(self) -> None:
        """Close every session and the audit log."""
        with self._lock:
            arms = [self._serving.control, self._serving.candidate, *self._retired]
            self._retired = []
        for arm in arms:
            if arm is not None:
                arm.close()
        if self.audit is not None:
            self.audit.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now() -> str:
    """UTC time with milliseconds, as audit records carry it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
