"""What a build keeps in the content-addressed cache (``edgekit.cache``), and the keys it keeps them under.

Two kinds of stage result are kept:

- ``candidates``: one request's candidate set, built and measured (the files
  and each candidate's facts and metrics). Its key covers everything the
  backend and the measurement read: the request and the device facts that
  change conversion (``request_key``), the model variant's fingerprint (the
  model file's sha256 and its actual weights), the data split, the
  calibration reference, the stem and interface names, the latency runs, the
  tool versions, edgekit's own code, and the host (timings are this
  machine's: another host's cache entry is a miss, not its numbers).
- ``variants``: a compressed model trained by the build (``[prune]``,
  ``[distill]``, a search's variants), keyed by its source model's
  fingerprint, the stage configs, the training data and the code.

A candidate set that failed or was skipped is never kept: a rerun retries it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit import backends
from edgekit.artifact import Artifact

if TYPE_CHECKING:
    from edgekit.data import Dataset
    from edgekit.model import LoadedModel
    from edgekit.pipeline.candidate_set import CandidateSet
    from edgekit.pipeline.prepare import Prepared
    from edgekit.variants import ModelVariant

CANDIDATES = "candidates"
VARIANTS = "variants"
MACS = "macs"
RECORD_VERSION = 1  # bump when the record layout below changes: old entries become misses


@functools.cache
def code_fingerprint() -> str:
    """sha256 over edgekit's own source files: a changed converter rule or metric invalidates every entry."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def host_fingerprint() -> dict[str, Any]:
    """What makes this machine's timings its own: another host's measurements are not reused here."""
    import os

    return {"node": platform.node(), "machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def _tensor_bytes(tensor: Any) -> bytes:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.is_quantized:
        tensor = tensor.int_repr()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bits
        tensor = tensor.view(torch.int16)
    return tensor.numpy().tobytes()


def weights_digest(module: Any) -> str:
    """sha256 of a torch module's state (names, dtypes, shapes and bytes, in order)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def model_fingerprint(model: LoadedModel) -> str:
    """The model file's sha256 (its code and weights as given) and the weights actually in the module."""
    return hashlib.sha256(f"{model.sha256}|{weights_digest(model.module)}".encode()).hexdigest()


def _arrays_digest(arrays: list[np.ndarray] | dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    items = arrays.items() if isinstance(arrays, dict) else enumerate(arrays)
    for name, array in items:
        digest.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def candidate_key(request_key: str, prepared: Prepared, variant: ModelVariant, latency_runs: int) -> list[Any]:
    """The parts a candidate set's cache key is made of (``edgekit.cache.cache_key`` hashes them)."""
    return [CANDIDATES, RECORD_VERSION, json.loads(request_key), model_fingerprint(variant.model),
            prepared.split.sha256, _arrays_digest(prepared.split.calibration.inputs),
            _arrays_digest(variant.calibration_reference), prepared.stem, list(prepared.output_names),
            [spec.as_dict() for spec in prepared.input_specs], latency_runs, backends.tool_versions(), code_fingerprint(),
            host_fingerprint()]


def _jsonable(value: Any) -> Any:
    """Backend details as JSON: numpy scalars as numbers, tuples as lists; anything else is a bug to hear about."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot keep a {type(value).__name__} in a cache record")


def candidate_record(found: CandidateSet) -> tuple[dict[str, Path], dict[str, Any]]:
    """A built set's files (named by position, so two recipes' equal file names cannot clash) and record."""
    files, artifacts = {}, []
    for index, artifact in enumerate(found.artifacts):
        name = f"{index}-{artifact.path.name}"
        files[name] = artifact.path
        artifacts.append({"file": name, "name": artifact.path.name, "format": artifact.format,
                          "precision": artifact.precision, "variant": artifact.variant, "parent": artifact.parent,
                          "config": _jsonable(artifact.config), "details": _jsonable(artifact.details),
                          "metrics": _jsonable(found.metrics[artifact.variant])})
    return files, {"version": RECORD_VERSION, "artifacts": artifacts}


def candidate_set_from(record: dict[str, Any], folder: Path) -> CandidateSet:
    """The set a record describes, its files (already copied into ``folder`` by the cache) renamed back."""
    from edgekit.pipeline.candidate_set import CandidateSet

    artifacts, metrics = [], {}
    for item in record["artifacts"]:
        path = folder / item["name"]
        (folder / item["file"]).rename(path)
        artifacts.append(Artifact(path, item["format"], item["precision"], item["variant"], item["parent"],
                                  item["config"], item["details"]))
        metrics[item["variant"]] = dict(item["metrics"])
    return CandidateSet(tuple(artifacts), metrics)


def variant_key(source: LoadedModel, stages: dict[str, Any], train: Dataset) -> list[Any]:
    """The parts of a trained model's cache key: its source, what trains it, on what, with which code."""
    import torch

    return [VARIANTS, RECORD_VERSION, model_fingerprint(source), _jsonable(stages), train.sha256,
            _arrays_digest(train.inputs), torch.__version__, code_fingerprint()]


def compress_cached(cache: Any, source: LoadedModel, train_data: Dataset, *, prune: Any, distill: Any,
                    base_dir: Path, progress: Any = None) -> tuple[LoadedModel, list[dict[str, Any]]]:
    """``compress_for_build`` through the cache: a model trained before from the same inputs is loaded instead.

    The module is kept whole (``torch.save``: a structurally pruned model has its own shapes), so the
    cache folder is trusted like the environment's own packages; a model torch cannot pickle (TorchScript)
    is trained and not kept.
    """
    import dataclasses
    import tempfile

    import torch

    from edgekit.cache import cache_key
    from edgekit.compress.stage import compress_for_build

    stages = {"prune": prune.model_dump(mode="json") if prune else None,
              "distill": distill.model_dump(mode="json") if distill else None}
    key = cache_key(*variant_key(source, stages, train_data))
    with tempfile.TemporaryDirectory(prefix="edgekit-variant-") as scratch:
        record = cache.get(VARIANTS, key, Path(scratch))
        if record is not None:
            module = torch.load(Path(scratch) / "module.pt", weights_only=False).eval()
            facts = record["model"]
            return dataclasses.replace(source, module=module, kind=facts["kind"], description=facts["description"],
                                       sha256=facts["sha256"]), record["reports"]
        model, reports = compress_for_build(source, train_data, prune=prune, distill=distill, base_dir=base_dir,
                                            progress=progress)
        try:
            torch.save(model.module, Path(scratch) / "module.pt")
            kept = {"model": {"kind": model.kind, "description": model.description, "sha256": model.sha256},
                    "reports": _jsonable(reports)}
        except Exception:  # noqa: BLE001 - not keepable (TorchScript, an odd report value): train again next time
            return model, reports
        cache.put(VARIANTS, key, {"module.pt": Path(scratch) / "module.pt"}, kept)
    return model, reports


def macs_cached(cache: Any, model: LoadedModel, module: Any, example: tuple[Any, ...]) -> int:
    """``estimate.count_macs`` through the cache: counting traces the model (3.6 s for the MLP sample, more
    than the rest of a cached build's preparation), and the count depends only on the model and the shapes."""
    import tempfile

    from edgekit.cache import cache_key
    from edgekit.estimate import count_macs

    shapes = [[list(t.shape), str(t.dtype)] for t in example]
    key = cache_key(MACS, RECORD_VERSION, model_fingerprint(model), shapes, code_fingerprint())
    with tempfile.TemporaryDirectory(prefix="edgekit-macs-") as scratch:
        record = cache.get(MACS, key, Path(scratch))
    if record is not None:
        return int(record["macs"])
    macs = count_macs(module, example)
    cache.put(MACS, key, {}, {"macs": int(macs)})
    return macs
