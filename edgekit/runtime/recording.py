"""What the audit log records of one prediction: never the inputs, the outputs or their top-k."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from edgekit.runtime.loaded import Provenance

# Outputs up to this many values are recorded whole; larger ones as top-k per row, or as a digest.
MAX_RECORDED_VALUES = 64


def audit_record(time: str, arm: str, provenance: Provenance, digest: str, unit_id: str | None,
                 outputs: list[np.ndarray] | None, names: tuple[str, ...], latency_ms: float | None, cached: bool,
                 error: str | None, top_k: int, fallback_from: str | None) -> dict[str, Any]:
    """One prediction's audit record (the log adds seq, prev and hash).

    The unit id is recorded as a digest, like the inputs: the log answers
    "which version decided for this unit?" to whoever holds the id, without
    listing the ids themselves.
    """
    record: dict[str, Any] = {
        "event": "prediction", "time": time, "arm": arm, "model": provenance.model, "version": provenance.version,
        "artifact": provenance.artifact, "artifact_sha256": provenance.artifact_sha256, "key_id": provenance.key_id,
        "input_digest": digest, "unit_digest": unit_digest(unit_id) if unit_id is not None else None,
        "latency_ms": round(latency_ms, 4) if latency_ms is not None else None, "cached": cached,
    }
    if fallback_from is not None:
        record["fallback_from"] = fallback_from
    if error is not None:
        record["error"] = error[:500]
    if outputs is not None:
        labels = names or tuple(f"output_{i}" for i in range(len(outputs)))
        record["outputs"] = {name: summarize(np.asarray(value), top_k)
                             for name, value in zip(labels, outputs, strict=False)}
    return record


def unit_digest(unit_id: str) -> str:
    """Hex sha256 of a unit id, as the audit log records it (``audit find`` hashes the id the same way)."""
    return hashlib.sha256(unit_id.encode("utf-8")).hexdigest()


def summarize(value: np.ndarray, top_k: int) -> dict[str, Any]:
    """An output as recorded: its values (small ones), top-k (index, value) per row, or shape and digest."""
    if value.size <= MAX_RECORDED_VALUES:
        return {"shape": list(value.shape), "values": _rounded(value).tolist()}
    if value.ndim == 2 and np.issubdtype(value.dtype, np.number):
        k = min(top_k, value.shape[1])
        order = np.argsort(-value, axis=1, kind="stable")[:, :k]
        return {"shape": list(value.shape),
                "top_k": [[[int(i), _float_text(float(row[i]))] for i in picks] for row, picks in zip(value, order,
                                                                                                   strict=True)]}
    data = np.ascontiguousarray(value)
    return {"shape": list(value.shape), "dtype": data.dtype.str, "sha256": hashlib.sha256(data.tobytes()).hexdigest()}


def _rounded(value: Any) -> Any:
    # Seven significant digits: float32's precision, and stable JSON for the hash chain.
    # NaN and infinities (which JSON cannot hold) are recorded by name: a model answering NaN is worth auditing.
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.floating):
        return np.vectorize(_float_text, otypes=[object])(array) if array.size else array
    return array


def _float_text(x: float) -> float | str:
    return float(f"{x:.7g}") if np.isfinite(x) else str(float(x))
