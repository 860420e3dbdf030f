"""The device's model store: verified versions side by side, switched atomically.

Layout::

    STORE/
      state.json              the pointer: current and previous version (one atomic file)
      versions/<version>/     a bundle's verified content: manifest.json, manifest.sig, files
      install.log             audit trail, one JSON object per line
      .staging-*/ .trash-*/   work in progress; swept by the next install or rollback

``state.json`` is the only thing that says which version is live. It changes
by writing a new file beside it, fsyncing it and ``os.replace``-ing it over
the old one, so at every instant it names either the old or the new state —
never half of each. A version folder is complete (extracted, verified and
fsynced under a ``.staging-*`` name) before it is renamed into ``versions/``,
and a folder is deleted only once no state names it. So a power cut at any
moment leaves the old or the new version fully in place, and the leftovers it
leaves are hidden work folders the next run removes.

Apps load the model from ``current_dir(store)`` (or read ``state.json``
themselves: ``versions/<current.version>``). One store holds one model; an
exclusive lock (flock on the store folder) serialises installs and rollbacks.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.artifact import fsync_dir as _fsync_dir  # one name the durability test can replace
from edgekit.artifact import sha256_file, write_durable
from edgekit.errors import InputError, SecurityError
from edgekit.release import device, revocation, rollout
from edgekit.release import index as release_index
from edgekit.release.archive import open_bundle
from edgekit.release.experiment import CandidatePlan, candidate_problem, experiment_fields
from edgekit.release.manifest import MANIFEST_NAME, canonical_bytes
from edgekit.release.runtimes import RuntimeFit, check_runtimes
from edgekit.release.schema import validate_manifest
from edgekit.release.signing import SIGNATURE_NAME, Trusted
from edgekit.release.timestamps import format_utc
from edgekit.release.verify import check_artifacts, check_manifest, file_entries, parse_signed_manifest
from edgekit.release.version import Version, is_semver, parse_semver

STATE_NAME = "state.json"
LOG_NAME = "install.log"
VERSIONS = "versions"
_WORK_PREFIXES = (".staging-", ".trash-", ".state-")
STATE_VERSION = 1


@dataclass(frozen=True)
class InstallResult:
    """What ``install_bundle`` did: ``status`` is installed, candidate, unchanged, deferred or blocked.

    ``candidate``: kept beside the current version as an A/B candidate (``install --candidate``).

    ``blocked``: the version was rolled back on this store (``edgekit
    rollback``), so a polling updater does not reinstall it; ``force`` does.
    """

    status: str
    model: str
    version: str
    previous: str | None
    device_id: str | None
    bucket: int | None
    rollout_percentage: int
    sha256: str | None
    path: Path | None
    runtimes: tuple[RuntimeFit, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "runtimes": [f.as_dict() for f in self.runtimes],
            "status": self.status,
            "model": self.model,
            "version": self.version,
            "previous": self.previous,
            "device_id": self.device_id,
            "bucket": self.bucket,
            "rollout_percentage": self.rollout_percentage,
            "sha256": self.sha256,
            "path": str(self.path) if self.path else None,
        }


class Store:
    """A model store folder; use ``Store.locked`` for anything that writes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # The group that may read the installed model (install --group); None keeps it to the owner.
        self.group_id: int | None = None

    @property
    def versions(self) -> Path:
        return self.root / VERSIONS

    def version_dir(self, version: str) -> Path:
        return self.versions / version

    def state(self) -> dict[str, Any] | None:
        """The store's state, or None for an empty store; InputError if state.json is damaged."""
        path = self.root / STATE_NAME
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise InputError(
                f"store state {path} is unreadable ({exc})", "Restore it or reinstall into a new store"
            ) from None
        problem = _state_problem(state)
        if problem:
            raise InputError(
                f"store state {path} is not an edgekit store state ({problem})", "Restore it or reinstall into a new store"
            )
        return state

    def installed_version(self) -> Version | None:
        """The current version, or None for an empty store."""
        state = self.state()
        return parse_semver(state["current"]["version"]) if state else None

    @classmethod
    @contextlib.contextmanager
    def locked(cls, root: Path) -> Iterator[Store]:
        """Hold the store's exclusive lock; a store created here is removed again if left empty.

        Only the holder removes the folder, and only while it holds the lock;
        a process that locked a folder which was removed or replaced meanwhile
        (it opened it before the holder removed it) lets go and reports the
        store busy, so two processes never both hold a store.
        """
        import fcntl  # POSIX only, like the devices a store lives on

        created = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(root, os.O_RDONLY)
        except OSError as exc:
            raise InputError(
                f"cannot open model store {root}: {exc.strerror or exc}", "Pass a folder you can write to with --into"
            ) from None
        busy = InputError(f"model store {root} is busy (another install or rollback holds it)",
                          "Retry when it has finished")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise busy from None
                raise
            if not _same_folder(fd, root):
                raise busy
            store = cls(root)
            store.sweep()
            try:
                yield store
            finally:
                if created:
                    with contextlib.suppress(OSError):
                        root.rmdir()  # only succeeds if nothing was installed; done while the lock is held
        finally:
            os.close(fd)

    def sweep(self) -> None:
        """Remove work folders and files an interrupted run left behind."""
        for child in self.root.iterdir():
            if child.name.startswith(_WORK_PREFIXES):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

    def write_state(self, state: dict[str, Any]) -> None:
        """Replace state.json atomically and durably."""
        data = canonical_bytes(state) + b"\n"
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.root)
        try:
            if self.group_id is not None:
                _give_group(fd, self.group_id, 0o640, self.root / STATE_NAME)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.root / STATE_NAME)
        finally:
            Path(tmp).unlink(missing_ok=True)
        _fsync_dir(self.root)

    def log(self, entry: dict[str, Any]) -> None:
        """Append one JSON line to install.log, durably."""
        path = self.root / LOG_NAME
        line = canonical_bytes(entry) + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # A power cut can tear the last line; start on a fresh line so one
            # torn entry never corrupts the next.
            size = os.fstat(fd).st_size
            if size:
                with open(path, "rb") as reader:
                    reader.seek(size - 1)
                    if reader.read(1) != b"\n":
                        line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove_version(self, version: str) -> None:
        """Delete a version folder: rename it out of ``versions/`` first, so it never looks half there."""
        folder = self.version_dir(version)
        if not folder.exists():
            return
        trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
        os.replace(folder, trash / version)
        _fsync_dir(self.versions)
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self, keep: set[str]) -> None:
        """Remove every version folder not in ``keep``."""
        if self.versions.is_dir():
            for folder in self.versions.iterdir():
                if folder.name not in keep:
                    self.remove_version(folder.name)

    def check_version_intact(self, version: str) -> dict[str, Any]:
        """Recheck a kept version's files against its stored manifest; return the manifest."""
        folder = self.version_dir(version)
        try:
            manifest_bytes = (folder / MANIFEST_NAME).read_bytes()
        except OSError:
            raise SecurityError(
                f"version {version} in {self.root} has no manifest", "Reinstall it from its bundle"
            ) from None
        manifest = validate_manifest(
            parse_signed_manifest(manifest_bytes), what=f"stored manifest of {version}", release=True
        )
        for name, entry in manifest["files"].items():
            path = folder.joinpath(*name.split("/"))
            if not path.is_file() or path.is_symlink() or sha256_file(path) != entry["sha256"]:
                raise SecurityError(
                    f"version {version} in {self.root} is damaged ({name} changed or missing)",
                    "Reinstall it from its bundle",
                )
        return manifest


_RECORD_KEYS = ("version", "manifest_sha256", "sha256", "installed_at")


def _state_problem(state: Any) -> str | None:
    """What is wrong with a parsed state.json, or None: every key install and rollback read, with its type."""
    if not isinstance(state, dict):
        return "not a JSON object"
    if not isinstance(state.get("model"), str):
        return "no model name"
    for slot in ("current", "previous"):
        record = state.get(slot)
        if record is None and slot == "previous":
            continue
        if not isinstance(record, dict):
            return f"no {slot} version record"
        missing = [key for key in _RECORD_KEYS if not isinstance(record.get(key), str)]
        if missing:
            return f"the {slot} record lacks {', '.join(missing)}"
        if not is_semver(record["version"]):
            return f"the {slot} version {record['version']!r} is not a version"
    if "candidate" in state:
        record = state["candidate"]
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in _RECORD_KEYS):
            return "the candidate record lacks a version record's keys"
        problem = candidate_problem(record)
        if problem:
            return problem
    if "group" in state and not isinstance(state["group"], str):
        return "group is not a group name"
    if "revocations" in state and revocation.Revocations.from_state(state["revocations"]) is None:
        return "the remembered revocation list is damaged"
    kept = state.get("kept", {})
    if not isinstance(kept, dict) or not all(isinstance(r, dict) and all(isinstance(r.get(k), str) for k in _RECORD_KEYS)
                                             for r in kept.values()):
        return "kept is not a map of version records"
    rolled_back = state.get("rolled_back", [])
    if not isinstance(rolled_back, list) or not all(isinstance(v, str) for v in rolled_back):
        return "rolled_back is not a list of versions"
    return None


def resolve_group(name: str) -> int:
    """The id of group ``name`` (a name or a number); InputError when this system has no such group."""
    import grp

    try:
        return grp.getgrgid(int(name)).gr_gid if name.isdigit() else grp.getgrnam(name).gr_gid
    except (KeyError, OverflowError):
        raise InputError(f"there is no group {name!r} on this system", "Pass the group the app runs as") from None


def _give_group(target: int | Path, gid: int, mode: int, shown: Path) -> None:
    """chown ``target`` (a descriptor or a path) to group ``gid`` and chmod it to ``mode``."""
    try:
        if isinstance(target, int):
            os.fchown(target, -1, gid)
            os.fchmod(target, mode)
        else:
            os.chown(target, -1, gid, follow_symlinks=False)
            os.chmod(target, mode)
    except PermissionError:
        raise InputError(f"cannot give group {gid} access to {shown} (this user is not in that group)",
                         "Run install as a member of the group, or as root") from None


def share_with_group(folder: Path, gid: int) -> None:
    """Let group ``gid`` read ``folder`` and everything in it: folders 0750, files 0640."""
    _give_group(folder, gid, 0o750, folder)
    for path in folder.rglob("*"):
        _give_group(path, gid, 0o750 if path.is_dir() else 0o640, path)


def _same_folder(fd: int, root: Path) -> bool:
    """Whether the locked descriptor is still the folder at ``root`` (not one removed or replaced meanwhile)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(root))
    except OSError:
        return False


def current_dir(root: Path) -> Path:
    """The folder of the live version, for apps that load the model; InputError if none is installed."""
    state = Store(root).state()
    if state is None:
        raise InputError(f"no model is installed in {root}", "Install one with edgekit install")
    return Store(root).version_dir(state["current"]["version"])


def _without(state: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``state`` minus ``keys``: a rollback drops kept versions and ends any experiment (its control is leaving)."""
    return {k: v for k, v in state.items() if k not in keys}


def _now() -> str:
    return format_utc(int(time.time()))


def _record(version: str, manifest_bytes: bytes, bundle_sha256: str) -> dict[str, Any]:
    return {
        "version": version,
        "manifest_sha256": sha256_bytes(manifest_bytes),
        "sha256": bundle_sha256,
        "installed_at": _now(),
    }


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def install_bundle(
    bundle: Path,
    root: Path,
    public_key: Trusted,
    *,
    allow_downgrade: bool = False,
    force: bool = False,
    device_id: str | None = None,
    app_version: str | None = None,
    runtime_check: bool = True,
    target: str | None = None,
    channel: str | None = None,
    group: str | None = None,
    threshold: int = 1,
    index: dict[str, Any] | None = None,
    candidate: CandidatePlan | None = None,
) -> InstallResult:
    """Verify ``bundle`` and make it the store's current version; keep the one it replaces.

    Steps: lock; verify signature, schema, expiry and version; check the
    bundle's target and channel against the store's device identity (``target``
    and ``channel`` name it at the first install, see ``device``); check that
    some artifact can run in this device's runtimes (``runtime_check``); decide the
    rollout (with a verified release ``index``, refuse a release older than the one it
    lists); extract into ``.staging-*`` while checking every file; share it
    with the store's group (``group``, remembered from the first install that
    names one: folders 0750, files 0640); rename
    that into ``versions/``; switch ``state.json``; log; remove versions that
    are neither current nor previous (with ``candidate``: keep it as the A/B
    candidate instead, see ``experiment``). Any refusal leaves the store as it was.
    """
    with Store.locked(root) as store:
        state = store.state()
        current = state["current"] if state else None
        with open_bundle(bundle) as reader:
            manifest_bytes, signature = reader.read_head()
            known = revocation.Revocations.from_state(state.get("revocations")) if state else None
            revoked = revocation.newest(known, revocation.embedded(signature, public_key))
            manifest, key_id = check_manifest(manifest_bytes, signature, public_key, app_version=app_version,
                                              app_version_required=True, revoked=revoked, threshold=threshold)
            model, release = manifest["model"]["name"], manifest["release"]
            identity = device.resolve(_store_identity(store, state), target, channel, root)
            group_name = group or (state.get("group") if state else None)
            store.group_id = resolve_group(group_name) if group_name else None
            device.check_release(identity, release)
            fits = tuple(check_runtimes(manifest)) if runtime_check else ()
            version_text = release["version"]
            if state is not None and state["model"] != model:
                raise InputError(
                    f"store {root} holds model {state['model']}, the bundle is {model}",
                    "Install each model into its own store (--into)",
                )
            manifest_sha = sha256_bytes(manifest_bytes)
            stale = release_index.behind(index, manifest, manifest_sha) if index is not None else None
            if stale:
                raise SecurityError(stale, "Refuse it and install the latest release; a device served an old release "
                                           "it did not ask for may be under a freeze or replay attack")
            base = {"model": model, "version": version_text, "device_id": device_id,
                    "rollout_percentage": release["rollout_percentage"], "runtimes": fits}
            early = (_candidate_unchanged_or_refused(store, state, version_text, manifest_sha, base) if candidate
                     else None) or _unchanged_or_refused(store, state, version_text, manifest_sha, allow_downgrade, base)
            if early is None:
                early = _rollout_decision(state, release, force, base)
            if early is not None:
                return early
            bundle_sha = _stage_version(store, state, reader, manifest, manifest_bytes, signature)
        record = {**_record(version_text, manifest_bytes, bundle_sha), "key_id": key_id}
        entry = _install_entry(record, model, release, current, device_id, force,
                               {f.path: f.status for f in fits} if runtime_check else "not checked")
        if candidate is not None and state is not None:
            _commit_candidate(store, state, record, candidate, entry)
        else:
            new_state = {"schema": STATE_VERSION, "model": model, "device": identity.as_dict(),
                         **({"revocations": revoked.as_dict()} if revoked else {}),
                         **({"group": group_name} if group_name else {})}
            _commit_install(store, state, record, release, new_state, entry)
        bucket = rollout.bucket(model, version_text, device_id) if device_id is not None else None
        return InstallResult("candidate" if candidate else "installed", previous=current["version"] if current else None,
                             bucket=bucket, sha256=bundle_sha, path=store.version_dir(version_text), **base)


def _commit_install(store: Store, state: dict[str, Any] | None, record: dict[str, Any], release: dict[str, Any],
                    new_state: dict[str, Any], entry: dict[str, Any]) -> None:
    """Make ``record`` current (the current one becomes previous), log it, and drop versions no state names.

    A running experiment ends here: its candidate was tried against the control this install replaces.
    """
    version, current = record["version"], state["current"] if state else None
    blocked = [v for v in (state or {}).get("rolled_back", []) if v != version]  # a forced install unblocks
    kept = _kept_for_rollback(state, release["rollback_to"], version)
    store.write_state({**new_state, "current": record, "previous": current,
                       **({"rolled_back": blocked} if blocked else {}), **({"kept": kept} if kept else {})})
    ended = (state or {}).get("candidate")
    store.log({**entry, **({"ended_experiment": ended["version"]} if ended else {})})
    store.prune({version, *kept} | ({current["version"]} if current else set()))


def _commit_candidate(store: Store, state: dict[str, Any], record: dict[str, Any], plan: CandidatePlan,
                      entry: dict[str, Any]) -> None:
    """Keep ``record`` as the store's candidate beside the unchanged current version, and log the start."""
    candidate = {**record, **experiment_fields(plan, record["installed_at"])}
    blocked = [v for v in state.get("rolled_back", []) if v != record["version"]]
    store.write_state({**{k: v for k, v in state.items() if k != "rolled_back"}, "candidate": candidate,
                       **({"rolled_back": blocked} if blocked else {})})
    store.log({**entry, "event": "experiment-start", "percentage": plan.percentage, "abort": plan.abort.as_dict(),
               "control": state["current"]["version"]})
    store.prune(set(_records(state)) | {record["version"]})


def _candidate_unchanged_or_refused(store: Store, state: dict[str, Any] | None, version_text: str, manifest_sha: str,
                                    base: dict[str, Any]) -> InstallResult | None:
    """For ``install --candidate``: "unchanged" when this release is already the candidate; raises when it cannot be one."""
    if state is None:
        raise InputError("a candidate needs a control: no model is installed in this store yet",
                         "Install the control release first with edgekit install, then the candidate")
    if state["current"]["version"] == version_text:
        raise InputError(f"{version_text} is the current version (the control), so it cannot also be the candidate",
                         "Install another version as the candidate")
    running = state.get("candidate")
    if running is None:
        return None
    if running["version"] == version_text and running["manifest_sha256"] == manifest_sha:
        return InstallResult("unchanged", previous=state["current"]["version"], bucket=None, sha256=running["sha256"],
                             path=store.version_dir(version_text), **base)
    raise InputError(f"an experiment with candidate {running['version']} is running in {store.root}",
                     "Promote or abort it first (edgekit experiment promote|abort)")


def _install_entry(record: dict[str, Any], model: str, release: dict[str, Any], current: dict[str, Any] | None,
                   device_id: str | None, forced: bool, runtimes: Any) -> dict[str, Any]:
    """The install log's line for an install of ``record``."""
    version = record["version"]
    return {"event": "install", "time": record["installed_at"], "model": model, "version": version,
            "sha256": record["sha256"], "manifest_sha256": record["manifest_sha256"], "key_id": record["key_id"],
            "previous": current["version"] if current else None, "device_id": device_id,
            "channel": release["channel"], "target": release["target"], "forced": forced,
            "downgrade": bool(current) and parse_semver(version) < parse_semver(current["version"]),
            "runtimes": runtimes}


def _records(state: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Every version the store keeps, by version: current, previous, and any kept as a release's rollback_to."""
    if not state:
        return {}
    kept = {state["current"]["version"]: state["current"], **state.get("kept", {})}
    if state.get("previous"):
        kept[state["previous"]["version"]] = state["previous"]
    return kept


def _kept_for_rollback(state: dict[str, Any] | None, rollback_to: str | None, new: str) -> dict[str, dict[str, Any]]:
    """The record of the new release's ``rollback_to`` when the store has that version and would otherwise drop it."""
    current = state["current"]["version"] if state else None
    record = _records(state).get(rollback_to) if rollback_to else None
    return {rollback_to: record} if record is not None and rollback_to not in (new, current) else {}  # type: ignore[dict-item]


def _fallback(store: Store, state: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Where leaving the current version goes, and the ``rollback_to`` its release names (or None).

    The named version when the store keeps it intact, else the previous one.

    The version being left may be the broken one: its rollback_to is read, never required intact.
    """
    current = state["current"]["version"]
    try:
        leaving = json.loads((store.version_dir(current) / MANIFEST_NAME).read_text(encoding="utf-8"))
        rollback_to = leaving["release"]["rollback_to"]
    except (OSError, ValueError, KeyError, TypeError):
        rollback_to = None
    records = {v: r for v, r in _records(state).items() if v != current}
    if rollback_to in records and _intact(store, rollback_to):
        return records[rollback_to], rollback_to
    return state.get("previous"), rollback_to


def _store_identity(store: Store, state: dict[str, Any] | None) -> device.DeviceIdentity | None:
    current = state["current"]["version"] if state else None
    return device.recorded(state, store.version_dir(current) / MANIFEST_NAME if current else None)


def _unchanged_or_refused(
    store: Store, state: dict[str, Any] | None, version_text: str, manifest_sha: str, allow_downgrade: bool,
    base: dict[str, Any],
) -> InstallResult | None:
    """"unchanged" when this exact release is current; raises for a same-version rebuild or a downgrade."""
    current = state["current"] if state else None
    if current is None:
        return None
    version, installed = parse_semver(version_text), parse_semver(current["version"])
    if version == installed:
        if current["manifest_sha256"] == manifest_sha:
            kept = state.get("previous") if state else None
            return InstallResult("unchanged", previous=kept["version"] if kept else None, bucket=None,
                                 sha256=current["sha256"], path=store.version_dir(version_text), **base)
        raise SecurityError(
            f"version {version_text} is already installed with different contents",
            "Refuse this bundle; a new release needs a new version number",
        )
    if version < installed and not allow_downgrade:
        raise SecurityError(
            f"bundle version {version_text} is lower than the installed version {installed} (a downgrade)",
            "Refuse it; to go back on purpose use edgekit rollback, or pass --allow-downgrade",
        )
    return None


def _rollout_decision(
    state: dict[str, Any] | None, release: dict[str, Any], force: bool, base: dict[str, Any]
) -> InstallResult | None:
    """"blocked" (rolled back here before) or "deferred" (outside the rollout), or None to install."""
    model, version_text, device_id = base["model"], base["version"], base["device_id"]
    current = state["current"] if state else None
    previous = current["version"] if current else None
    bucket = rollout.bucket(model, version_text, device_id) if device_id is not None else None
    if force:
        return None
    if state is not None and version_text in state.get("rolled_back", []):
        return InstallResult("blocked", previous=previous, bucket=bucket, sha256=None, path=None, **base)
    if release["rollout_percentage"] < 100:
        if device_id is None:
            raise InputError(
                f"release {version_text} rolls out to {release['rollout_percentage']}% of devices "
                "and this device has no id",
                f"Pass --device-id, set ${rollout.DEVICE_ID_ENV}, or pass --force to install anyway",
            )
        if not rollout.selected(model, version_text, device_id, release["rollout_percentage"]):
            return InstallResult("deferred", previous=previous, bucket=bucket, sha256=None, path=None, **base)
    return None


def _stage_version(
    store: Store, state: dict[str, Any] | None, reader: Any, manifest: dict[str, Any], manifest_bytes: bytes,
    signature: bytes | None,
) -> str:
    """Extract and check every file into a staging folder, then rename it into ``versions/``; the bundle's sha256.

    The store changes only after everything is verified.
    """
    version_text = manifest["release"]["version"]
    previous = state.get("previous") if state else None
    kept_previous = previous is not None and previous["version"] == version_text
    if kept_previous and previous["manifest_sha256"] != sha256_bytes(manifest_bytes):
        raise SecurityError(
            f"a different build of version {version_text} is kept as the previous version",
            "Refuse this bundle; a new release needs a new version number",
        )
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=store.root))
    try:
        reader.extract(file_entries(manifest), staging)
        check_artifacts(manifest, staging)
        write_durable(staging / MANIFEST_NAME, manifest_bytes)
        write_durable(staging / SIGNATURE_NAME, signature or b"")
        if store.group_id is not None:
            for folder in (store.root, store.versions):
                folder.mkdir(exist_ok=True)
                _give_group(folder, store.group_id, 0o750, folder)
            share_with_group(staging, store.group_id)
        _fsync_tree(staging)
        if not (kept_previous and _intact(store, version_text)):
            # Not the kept previous version (or a damaged copy of it): an orphan from an
            # interrupted run, or nothing. Replace it with the verified staging folder.
            store.remove_version(version_text)
            store.versions.mkdir(exist_ok=True)
            os.replace(staging, store.version_dir(version_text))
            _fsync_dir(store.versions)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return reader.sha256


def _intact(store: Store, version: str) -> bool:
    try:
        store.check_version_intact(version)
    except InputError:  # SecurityError is an InputError
        return False
    return True


def _fsync_tree(folder: Path) -> None:
    for dirpath, _dirs, _files in os.walk(folder):
        _fsync_dir(Path(dirpath))


@dataclass(frozen=True)
class RollbackResult:
    """The version rollback made current, and the one it left."""

    model: str
    version: str
    previous: str
    rollback_to: str | None
    path: Path

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "previous": self.previous,
            "rollback_to": self.rollback_to,
            "path": str(self.path),
        }


def rollback(root: Path, device_id: str | None = None) -> RollbackResult:
    """Make the kept previous version current (atomically); the current one becomes previous.

    The previous version's files are rechecked against its stored manifest
    first, so rollback never switches to a damaged folder.
    """
    if not (root / STATE_NAME).exists():
        raise InputError(f"no model is installed in {root}", "Pass the store you install into with --into")
    with Store.locked(root) as store:
        state = store.state()
        if state is None:
            raise InputError(f"no model is installed in {root}", "Pass the store you install into with --into")
        current = state["current"]
        target, rollback_to = _fallback(store, state)
        if target is None:
            raise InputError(
                f"store {root} keeps no previous version to roll back to",
                "Install the version you want with --allow-downgrade",
            )
        store.check_version_intact(target["version"])
        # Remember the version left behind, so that an updater polling for "newer than installed" does not
        # reinstall the release that was just rolled back (install refuses it as "blocked" unless forced).
        blocked = sorted({*state.get("rolled_back", []), current["version"]} - {target["version"]})
        store.write_state({**_without(state, "kept", "candidate"), "current": target, "previous": current,
                           "rolled_back": blocked})
        store.prune({target["version"], current["version"]})
        store.log({"event": "rollback", "time": _now(), "model": state["model"], "version": target["version"],
                   "sha256": target["sha256"], "manifest_sha256": target["manifest_sha256"],
                   "previous": current["version"], "device_id": device_id, "rollback_to": rollback_to,
                   **({"ended_experiment": state["candidate"]["version"]} if "candidate" in state else {})})
        return RollbackResult(state["model"], target["version"], current["version"], rollback_to,
                              store.version_dir(target["version"]))


def revert_install(root: Path, version: str, device_id: str | None, why: dict[str, Any]) -> str | None:
    """Undo the install of ``version`` after it failed its health check; the version now current, or None.

    With a kept previous version, switch back to it (rechecked first) and
    block ``version`` on this device, as ``rollback`` does; after a first
    install, remove the version and the state so the store is empty again.
    ``why`` (the health check's record) goes into the install log.
    """
    with Store.locked(root) as store:
        state = store.state()
        if state is None or state["current"]["version"] != version:
            raise InputError(f"store {root} no longer has {version} current (another install ran meanwhile)",
                             "Check the store with edgekit verify --store, then roll back by hand if needed")
        previous, (target, _) = state.get("previous"), _fallback(store, state)
        entry = {"event": "health-check-failed", "time": _now(), "model": state["model"], "version": version,
                 "device_id": device_id, "health_check": why}
        if target is None:
            (store.root / STATE_NAME).unlink()
            _fsync_dir(store.root)
            store.remove_version(version)
            store.log({**entry, "now": None})
            return None
        store.check_version_intact(target["version"])
        blocked = sorted({*state.get("rolled_back", []), version} - {target["version"]})
        still_previous = previous if previous is not None and previous["version"] != target["version"] else None
        store.write_state({**_without(state, "kept", "candidate"), "current": target,
                           "previous": still_previous, "rolled_back": blocked})
        store.prune({target["version"], *([still_previous["version"]] if still_previous else [])})
        store.log({**entry, "now": target["version"]})
        return str(target["version"])
