"""One installed release, loaded: its manifest, the artifact chosen for this device, a session, provenance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import backends
from edgekit.backends import Session
from edgekit.errors import BackendUnavailableError, InputError
from edgekit.release.manifest import MANIFEST_NAME
from edgekit.runtime.interface import Interface


@dataclass(frozen=True)
class Provenance:
    """Which release answered: what the audit question "which version made this decision?" needs."""

    model: str
    version: str
    artifact: str
    artifact_sha256: str
    format: str
    precision: str
    target: str
    key_id: str | None
    arm: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LoadedRelease:
    """A version folder of the store with an open session on its chosen artifact."""

    folder: Path
    manifest: dict[str, Any]
    artifact: dict[str, Any]
    session: Session
    interface: Interface
    provenance: Provenance
    skipped: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        return self.provenance.version

    def close(self) -> None:
        self.session.close()


def _order(artifacts: list[dict[str, Any]], prefer: tuple[str, ...]) -> list[dict[str, Any]]:
    """Preferred formats first (in the order given), then the formats the ``runtime`` extra runs, then the rest.

    A format whose runtime needs more than that extra (e.g. ExecuTorch's Python
    runtime takes torch tensors) comes last, so a device with the extra alone never tries it first.
    """
    def rank(entry: dict[str, Any]) -> tuple[int, int]:
        fmt = entry["format"]
        preferred = prefer.index(fmt) if fmt in prefer else len(prefer)
        light = 0 if fmt in backends.REGISTRY and backends.info(fmt).runtime_extra == "runtime" else 1
        return preferred, light

    return sorted(artifacts, key=rank)


def candidates_for(manifest: dict[str, Any], target: str | None) -> list[dict[str, Any]]:
    """The passed artifacts of ``target`` (all passed ones when the device names none), in manifest order."""
    return [a for a in manifest.get("artifacts", [])
            if a.get("passed") and (target is None or a.get("target") == target)]


def load_release(folder: Path, record: dict[str, Any], arm: str, target: str | None, prefer: tuple[str, ...] = (),
                 threads: int = 1) -> LoadedRelease:
    """Open the best artifact of the release in ``folder`` that runs here.

    Tries the target's passed artifacts in ``_order``; an artifact whose
    runtime is missing or refuses it is skipped (the reasons are kept in
    ``skipped``). InputError when none opens, listing why each failed.
    """
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    interface = Interface.from_manifest(manifest)
    unknown = [fmt for fmt in prefer if fmt not in backends.REGISTRY]
    if unknown:
        raise InputError(f"unknown format(s) {', '.join(unknown)} in --prefer",
                         f"Use formats edgekit knows: {', '.join(backends.formats())}")
    skipped: list[str] = []
    for entry in _order(candidates_for(manifest, target), prefer):
        session = _try_open(folder / entry["path"], entry["format"], threads, skipped)
        if session is not None:
            model = manifest["model"]
            provenance = Provenance(model["name"], manifest["release"]["version"], entry["path"], entry["sha256"],
                                    entry["format"], entry["precision"], entry["target"], record.get("key_id"), arm)
            return LoadedRelease(folder, manifest, entry, session, interface, provenance, skipped)
    why = "; ".join(skipped) or f"the release has no passed artifact for target {target}"
    raise InputError(f"no artifact of {manifest['model']['name']} {manifest['release']['version']} runs here ({why})",
                     "Install the runtime it needs (pip install 'edgekit[runtime]'), or ship an artifact this device "
                     "runs")


def _try_open(path: Path, fmt: str, threads: int, skipped: list[str]) -> Session | None:
    """A session on ``path``, or None after noting in ``skipped`` why it cannot open here."""
    if fmt not in backends.REGISTRY:
        skipped.append(f"{path.name}: format {fmt} is unknown to this edgekit")
        return None
    elsewhere = backends.bench_unavailable(fmt)
    if elsewhere:
        skipped.append(f"{path.name}: {elsewhere}")
        return None
    try:
        return backends.bencher(fmt).open_session(path, threads=threads)
    except (BackendUnavailableError, ImportError) as exc:
        skipped.append(f"{path.name}: {exc}")
    except InputError as exc:
        skipped.append(f"{path.name}: {exc.problem}")
    return None
