"""The build's manifest: assembled from the prepared model and the targets' outcomes, checked, and old files swept.

The manifest is written last, so it only ever lists complete files; a
manifest the schema refuses is edgekit's bug and is never written.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.backends import tool_versions
from edgekit.attacks.assess import describe as describe_attacks
from edgekit.errors import InternalError
from edgekit.pipeline.inputs import BuildInputs
from edgekit.pipeline.prepare import Prepared
from edgekit.release.manifest import MANIFEST_NAME, SCHEMA_VERSION
from edgekit.release.timestamps import build_time


def interface(prepared: Prepared) -> list[dict[str, Any]]:
    """The model's inputs as devices check them: name, shape, dtype and the value range calibration saw.

    ``range`` ([min, max] over the calibration split) is what quantized
    artifacts were scaled for; the device runtime refuses inputs far outside it.
    """
    calibration = prepared.split.calibration.inputs
    entries = []
    for spec in prepared.input_specs:
        entry = spec.as_dict()
        values = calibration.get(spec.name)
        if values is not None and values.size and np.issubdtype(values.dtype, np.number):
            entry["range"] = [float(values.min()), float(values.max())]
        entries.append(entry)
    return entries


def assemble(inputs: BuildInputs, prepared: Prepared, targets: list[dict[str, Any]],
             artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest document (schema ``SCHEMA_VERSION``)."""
    section = inputs.config.model
    data = prepared.split
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": build_time(),  # $SOURCE_DATE_EPOCH when set: reproducible manifests
        "model": {
            "name": prepared.stem,
            "version": section.version,
            "source": prepared.model.description,
            "source_sha256": prepared.model.sha256,
            "inputs": interface(prepared),
            "outputs": list(prepared.output_names),
            "compression": list(prepared.compression),
            "macs": prepared.base.macs,
            "parameters": prepared.base.parameters,
        },
        "toolkit": {"edgekit": __version__, "python": platform.python_version(), "versions": tool_versions()},
        "data": {
            "file": inputs.data_path.name,
            "sha256": data.evaluation.sha256,
            "split_sha256": data.sha256,
            "seed": data.seed,
            "calibration_size": len(data.calibration),
            "evaluation_size": len(data.evaluation),
            "labelled": data.evaluation.labelled,
        },
        "reference": dict(prepared.reference_metrics),
        **({"attacks": describe_attacks(prepared.attacks)} if prepared.attacks is not None else {}),
        "targets": targets,
        "artifacts": artifacts,
    }


def check_schema(manifest: dict[str, Any]) -> None:
    """Refuse to write a manifest that ``verify`` and ``bundle`` would refuse to read: that is edgekit's bug."""
    from edgekit.release.schema import schema_errors

    problems = schema_errors(manifest)
    if problems:
        raise InternalError(f"the build made a manifest its own schema refuses: {'; '.join(problems[:5])}")


def listed_in(manifest: dict[str, Any]) -> set[str]:
    """Relative paths of the artifacts, reports and firmware folders a manifest lists."""
    paths = set()
    for artifact in manifest.get("artifacts", []):
        if isinstance(artifact, dict):
            paths.update(str(artifact[key]) for key in ("path", "report") if isinstance(artifact.get(key), str))
            firmware = artifact.get("firmware")
            if isinstance(firmware, dict) and isinstance(firmware.get("path"), str):
                paths.add(firmware["path"])
    return paths


def listed_files(output: Path) -> set[str]:
    """What an earlier build's manifest in ``output`` listed (empty when there is none or it is unreadable)."""
    try:
        earlier = json.loads((output / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return listed_in(earlier) if isinstance(earlier, dict) else set()


def remove_stale(output: Path, relative_paths: set[str]) -> None:
    """Delete files an earlier build wrote that this build no longer ships (a target or precision dropped).

    Only paths the earlier manifest listed, and only inside ``output``: a
    rebuild never deletes what edgekit did not write.
    """
    root = output.resolve()
    for relative in relative_paths:
        path = (output / relative).resolve()
        if not path.is_relative_to(root) or path == root:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        parent = path.parent
        while parent != root and parent.is_relative_to(root) and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()  # drop a target folder left empty
            parent = parent.parent
