"""Artifact records, content hashing and atomic file writes.

An ``Artifact`` is a file on disk plus what is known about it: never a live
model object. Writes go to a temporary file in the destination folder and are
renamed into place, so a reader (or a manifest) never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgekit.errors import OutputError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, or of a directory's files in sorted order (for .mlpackage)."""
    digest = hashlib.sha256()
    if path.is_dir():
        # Sort by POSIX path string so the hash is the same on every OS.
        for child in sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix()):
            digest.update(child.relative_to(path).as_posix().encode())
            digest.update(b"\0")
            digest.update(bytes.fromhex(sha256_file(child)))
        return digest.hexdigest()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def size_bytes(path: Path) -> int:
    """Size of a file, or the total of a directory's files."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def gzip_size_bytes(path: Path) -> int:
    """Bytes of ``path`` gzip-compressed (level 9), per file for a directory: roughly what a
    ``.tar.gz`` release bundle spends on it, and where zeroed (pruned) weights pay off."""
    import zlib

    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    total = 0
    for file in files:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31 = gzip container
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                total += len(packer.compress(chunk))
        total += len(packer.flush())
    return total


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it is writable, or raise OutputError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".edgekit-probe-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write to output folder {path}: {exc.strerror or exc}",
            "Choose a folder you can write to with -o/--output",
        ) from None
    return path


@contextmanager
def atomic_path(destination: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    Works for files and directories. On any exception the temporary is removed
    and ``destination`` is untouched.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent)) / destination.name
    try:
        yield tmp
        _replace(tmp, destination)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def _replace(source: Path, destination: Path) -> None:
    if source.is_dir():
        # Directories cannot be renamed over a non-empty one: move the old aside first.
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(destination, old)
            os.replace(source, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(source, destination)
        return
    with source.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(source, destination)



def fsync_dir(path: Path) -> None:
    """Make renames and new entries in folder ``path`` durable: a rename is on disk only once its folder is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

def write_durable(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) with ``data`` and fsync it; the caller syncs its folder and renames."""
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(destination: Path, data: bytes) -> None:
    """Write ``data`` to ``destination`` atomically."""
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)


def atomic_copy(source: Path, destination: Path) -> None:
    """Copy a file or directory to ``destination`` atomically."""
    with atomic_path(destination) as tmp:
        if source.is_dir():
            shutil.copytree(source, tmp)
        else:
            shutil.copyfile(source, tmp)


@dataclass(frozen=True)
class CandidateFacts:
    """The facts about a candidate that the rest of edgekit reads, whatever the format.

    Backends write them into ``Artifact.details`` under these keys; every
    other key there is the backend's own and only reported. ``read`` checks
    the types, so a backend that writes a wrong one fails loudly at the first
    reader instead of deep inside a budget check.

    ``weights``: the weight census (``by_precision``, ``parameters``);
    ``coverage``: ``edgekit.coverage.Coverage.as_dict()``; ``float_agreement``:
    "fp32" / "fp16" for a plain float program validation holds to the FP32
    model (``validate.FLOAT_AGREEMENT``); ``vs_fp32``: the interleaved timing
    record (``edgekit.timing.comparison``, or ``{"error": ...}``);
    ``min_runtime_version``: the oldest runtime that loads it, when the
    backend knows better than its registry entry; ``emulated``: validated by
    an emulator on this host; ``micro``: microcontroller figures (flash,
    arena); ``io_quantization``: scale and zero point of integer I/O.
    """

    weights: Mapping[str, Any] | None = None
    coverage: Mapping[str, Any] | None = None
    float_agreement: str | None = None
    vs_fp32: Mapping[str, Any] | None = None
    min_runtime_version: str | None = None
    emulated: bool = False
    micro: Mapping[str, Any] | None = None
    io_quantization: Mapping[str, Any] | None = None

    # Facts a manifest entry carries as they are (besides the ones it turns into its own fields).
    MANIFEST_KEYS = ("io_quantization", "micro", "weights", "emulated", "coverage")

    @classmethod
    def read(cls, details: Mapping[str, Any], where: str = "candidate") -> CandidateFacts:
        """The facts in ``details``; InternalError naming the key when a backend wrote the wrong type."""
        from dataclasses import fields

        from edgekit.errors import InternalError

        expected = {"weights": Mapping, "coverage": Mapping, "vs_fp32": Mapping, "micro": Mapping,
                    "io_quantization": Mapping, "float_agreement": str, "min_runtime_version": str, "emulated": bool}
        values = {}
        for item in fields(cls):
            value = details.get(item.name)
            if value is None:
                continue
            if not isinstance(value, expected[item.name]):
                raise InternalError(f"{where}: details['{item.name}'] is a {type(value).__name__}, "
                                    f"not a {expected[item.name].__name__}")
            values[item.name] = value
        if values.get("float_agreement") not in (None, "fp32", "fp16"):
            raise InternalError(f"{where}: float_agreement {values['float_agreement']!r} is neither 'fp32' nor 'fp16'")
        return cls(**values)

    @property
    def latency_vs_fp32(self) -> float | None:
        """The candidate's host p50 over its FP32 counterpart's, timed interleaved; None when not timed."""
        ratio = (self.vs_fp32 or {}).get("latency_vs_fp32")
        return float(ratio) if isinstance(ratio, (int, float)) else None


@dataclass(frozen=True)
class Artifact:
    """A built model file and what made it.

    ``path`` is the file (or .mlpackage folder) on disk; ``variant`` names the
    exact recipe inside a precision (e.g. ``qdq-static-u8s8``); ``details``
    holds backend facts such as the weight precision census.
    """

    path: Path
    format: str
    precision: str
    variant: str
    parent: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen means frozen: a backend adds facts by making a new Artifact (dataclasses.replace), never in place.
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @property
    def facts(self) -> CandidateFacts:
        """The typed view of ``details`` the pipeline and validation read (see ``CandidateFacts``)."""
        return CandidateFacts.read(self.details, f"{self.format} {self.precision} {self.variant}")

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)

    @property
    def size_bytes(self) -> int:
        return size_bytes(self.path)
