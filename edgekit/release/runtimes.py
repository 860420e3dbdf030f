"""Whether this device's installed runtimes can run a release's artifacts.

Each manifest artifact names the runtime it was validated in and the oldest
runtime version that loads it (read from the artifact where the format
records one: the TFLite flatbuffer's ``min_runtime_version``, the ONNX
opset and IR version, the Core ML deployment target). ``install`` compares
those with the distributions installed here, read from package metadata so
that no runtime is imported.

Statuses: ``ok`` (a runtime here meets the minimum), ``too old``,
``missing``, ``unknown`` (a runtime is installed but its numbering cannot be
compared with the minimum) and ``not checked`` (the minimum is an operating
system, e.g. ``iOS 17``, which the app checks, not edgekit).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

from edgekit import backends
from edgekit.errors import InputError
from edgekit.release.version import Version, parse_loose

RUNNABLE = frozenset({"ok", "unknown"})


@dataclass(frozen=True)
class RuntimeFit:
    """One artifact against the runtimes installed here."""

    path: str
    needs: str
    found: str | None
    status: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "needs": self.needs, "found": self.found, "status": self.status,
                **({"note": self.note} if self.note else {})}

    def describe(self) -> str:
        found = f" ({self.found} installed)" if self.found else ""
        return f"{self.path} needs {self.needs}{found}: {self.status}" + (f" — {self.note}" if self.note else "")


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed version of each distribution in ``names`` (missing ones left out)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _version(text: str) -> Version | None:
    try:
        return parse_loose(text.strip())
    except InputError:
        return None


def fit(artifact: dict[str, Any], installed: dict[str, str]) -> RuntimeFit:
    """How ``artifact`` (a manifest entry) fares against ``installed`` {distribution: version}."""
    entry = backends.info(artifact["format"])
    minimum_text = str(artifact.get("min_runtime_version") or entry.min_runtime)
    names = (entry.runtime, *entry.runtimes)
    needs = f"{' or '.join(names)} >= {minimum_text}"
    minimum = _version(minimum_text)
    if minimum is None:
        return RuntimeFit(artifact["path"], f"{entry.label} on {minimum_text}", None, "not checked",
                          "an operating-system requirement, which the app checks")
    present = [(name, installed[name]) for name in names if name in installed]
    if not present:
        return RuntimeFit(artifact["path"], needs, None, "missing")
    renumbered = dict(entry.renumbered_runtimes)
    unknown = None
    for name, text in present:
        if name in renumbered:
            ceiling = _version(renumbered[name])
            if ceiling is not None and minimum <= ceiling:
                return RuntimeFit(artifact["path"], needs, f"{name} {text}", "ok",
                                  f"every {name} release runs what {renumbered[name]} runs")
            unknown = unknown or (name, text, f"{name} numbers its releases apart from {minimum_text}")
            continue
        version = _version(text)
        if version is None:
            unknown = unknown or (name, text, f"{name} version {text!r} is not a plain release number")
        elif version >= minimum:
            return RuntimeFit(artifact["path"], needs, f"{name} {text}", "ok")
    if unknown is not None:
        return RuntimeFit(artifact["path"], needs, f"{unknown[0]} {unknown[1]}", "unknown", unknown[2])
    return RuntimeFit(artifact["path"], needs, ", ".join(f"{n} {v}" for n, v in present), "too old")


def check_runtimes(manifest: dict[str, Any], installed: dict[str, str] | None = None) -> list[RuntimeFit]:
    """Every artifact of ``manifest`` against this device's runtimes (``installed`` overrides the lookup).

    Raises InputError when some artifact's minimum can be checked and no artifact can run here.
    """
    if installed is None:
        installed = installed_versions(backends.runtime_distributions())
    fits = [fit(artifact, installed) for artifact in manifest["artifacts"]]
    checked = [f for f in fits if f.status != "not checked"]
    if checked and not any(f.status in RUNNABLE for f in fits):
        raise InputError(
            "no artifact in this release can run on this device: " + "; ".join(f.describe() for f in checked),
            "Install a runtime that meets it (pip install 'edgekit[runtime]' -c constraints.txt), or pass "
            "--no-runtime-check to install into a store for another machine (an image built elsewhere)",
        )
    return fits
