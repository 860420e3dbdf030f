"""Release bundles as archives: a reproducible tar.gz writer and a defensive reader.

Layout of a bundle (in this order)::

    manifest.json            canonical release manifest
    manifest.sig             detached Ed25519 signature over manifest.json
    <file> ...               every file the manifest's ``files`` map lists, sorted

Writer: the same entries give the same bytes — fixed order, one mtime for every
member, owner 0/0 with empty names, mode 0644, regular files only, a gzip
header with mtime 0 and no file name.

Reader: one forward pass over the stream (``r|``), so nothing is read twice
and an unsigned member is refused at its header, before its data is read or
written. Memory is bounded before the signature is checked: the gzip stream
is inflated in small steps, extended headers (PAX, GNU long names) are
refused above ``MAX_EXTENDED_HEADER`` before they are read, members are
counted, and anything after the tar's zero padding or after the one gzip
member (appended data, a second gzip member) is refused. ``read_head`` returns the manifest and signature bytes for the caller
to verify; only then does ``extract`` write the listed files, each checked
against its declared size and sha256 while it streams. Every member name and
type is checked first: absolute paths, ``..``, links, devices and anything
but regular files are refused, and files are created with O_EXCL|O_NOFOLLOW
inside a fresh folder, so nothing can land outside it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edgekit.artifact import atomic_path
from edgekit.errors import InputError, SecurityError
from edgekit.release.manifest import MANIFEST_NAME
from edgekit.release.signing import SIGNATURE_NAME

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_MAX_MANIFEST = 16 << 20
_MAX_SIGNATURE = 4096
# Padding after the end-of-archive marker is at most one tar record of zeros; more is not ours.
_MAX_TRAILER = tarfile.RECORDSIZE
# edgekit writes a PAX header only for a member name over 100 characters (names are at most 4096).
MAX_EXTENDED_HEADER = 8 << 10
# Far above what a release holds (artifacts, reports, a few files per .mlpackage), far below what hurts.
MAX_MEMBERS = 10_000
_INFLATE_INPUT = 64 << 10
_COMPONENT = re.compile(r"[A-Za-z0-9_+@-][A-Za-z0-9._+@-]{0,254}", re.ASCII)
_REFUSE = "Refuse this bundle; only install bundles made by edgekit bundle and fetched intact"


@dataclass(frozen=True)
class FileEntry:
    """What the signed manifest says a bundle file is."""

    sha256: str
    size_bytes: int


def check_member_name(name: str) -> None:
    """Refuse an archive path that is absolute, climbs with ``..``, or uses unusual characters.

    Allowed: relative POSIX paths whose components use letters, digits and
    ``._+@-`` and do not start with a dot (so no ``.``/``..`` and no hidden files).
    """
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or name.startswith("\\"):
        raise SecurityError(f"bundle member {name!r} is an absolute path", _REFUSE)
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise SecurityError(f"bundle member {name!r} contains '..'", _REFUSE)
    if len(parts) > 32 or len(name) > 4096 or not all(_COMPONENT.fullmatch(part) for part in parts):
        raise SecurityError(f"bundle member {name!r} is not a plain relative path", _REFUSE)


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    if member.isdir():
        return "a directory"
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return "file"
    return f"an unsupported member type ({member.type!r})"


# -- writing -------------------------------------------------------------------------------


def write_bundle(destination: Path, entries: list[tuple[str, bytes | Path]], mtime: int) -> None:
    """Write ``entries`` (archive name, bytes or a file path) as a reproducible tar.gz, atomically."""
    with atomic_path(destination) as tmp, tmp.open("wb") as raw:
        # filename="" and mtime=0 keep the gzip header free of the path and the clock.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, content in entries:
                    check_member_name(name)
                    info = tarfile.TarInfo(name)
                    info.type = tarfile.REGTYPE
                    info.mode = 0o644
                    info.mtime = mtime
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if isinstance(content, bytes):
                        info.size = len(content)
                        tar.addfile(info, io.BytesIO(content))
                    else:
                        info.size = content.stat().st_size
                        with content.open("rb") as handle:
                            tar.addfile(info, handle)


# -- reading -------------------------------------------------------------------------------


def _corrupt(path: Path, exc: BaseException) -> SecurityError:
    detail = str(exc) or type(exc).__name__
    return SecurityError(
        f"bundle {path} is truncated or corrupt ({detail})",
        "Download it again; a bundle must be a complete tar.gz made by edgekit bundle",
    )


_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeError)


class _Refused(Exception):
    """Raised from inside tarfile's header parsing; turned into a SecurityError by the reader."""


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses an oversized extended header before tarfile reads it into memory.

    tarfile reads a PAX or GNU long-name header's whole body at once; a small
    compressed bundle can declare one of hundreds of MiB.
    """

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        extended = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                    tarfile.GNUTYPE_LONGLINK)
        if self.type in extended and self.size > MAX_EXTENDED_HEADER:
            raise _Refused(f"an extended tar header of {self.size} bytes (at most {MAX_EXTENDED_HEADER} are read)")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _Refused("a GNU sparse member")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class _OneGzipMember(io.RawIOBase):
    """Inflates exactly one gzip member, at most one read buffer at a time; refuses any byte after it.

    gzip.GzipFile would inflate an appended second member as more data.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj(wbits=31)  # gzip wrapper: header, CRC and length checked
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._ended:
            source = self._inflate.unconsumed_tail or self._raw.read(_INFLATE_INPUT)
            if not source:
                raise EOFError("the gzip stream ends early")
            out = self._inflate.decompress(source, len(buffer))
            if self._inflate.eof:
                self._ended = True
                if self._inflate.unused_data or self._raw.read(1):
                    raise _Refused("bytes after its gzip stream (appended data or a second gzip member)")
            if out:
                buffer[: len(out)] = out
                return len(out)
        return 0


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes every byte read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        self.digest.update(data)
        buffer[: len(data)] = data
        return len(data)


class BundleReader:
    """One forward pass over a bundle: ``read_head`` first, then ``extract``.

    ``sha256`` is the hash of the bundle's bytes as read, so the hash an audit
    log records is of the very bytes that were verified (no second read).
    """

    def __init__(self, path: Path, raw: BinaryIO) -> None:
        self.path = path
        self._hashing = _HashingReader(raw)
        self._gz = _OneGzipMember(self._hashing)
        self._members = 0
        try:
            self._tar = tarfile.open(fileobj=self._gz, mode="r|", tarinfo=_BoundedTarInfo)
        except _Refused as exc:
            raise SecurityError(f"bundle {path} holds {exc}", _REFUSE) from None
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise _corrupt(path, exc) from None
        except _READ_ERRORS as exc:
            raise SecurityError(
                f"bundle {path} is gzip-compressed but not a tar archive ({exc})",
                "Pass a .tar.gz made by edgekit bundle",
            ) from None
        self._pending: tarfile.TarInfo | None = None

    def _next(self) -> tarfile.TarInfo | None:
        if self._pending is not None:
            member, self._pending = self._pending, None
            return member
        try:
            member = self._tar.next()
        except _Refused as exc:
            raise SecurityError(f"bundle {self.path} holds {exc}", _REFUSE) from None
        except _READ_ERRORS as exc:
            raise _corrupt(self.path, exc) from None
        if member is not None:
            self._members += 1
            self._tar.members.clear()  # a stream read keeps every header otherwise
            if self._members > MAX_MEMBERS:
                raise SecurityError(f"bundle {self.path} holds more than {MAX_MEMBERS} members", _REFUSE)
            check_member_name(member.name)
            kind = _member_kind(member)
            if kind not in ("file", "a directory"):
                raise SecurityError(
                    f"bundle member {member.name!r} is {kind}; bundles hold only regular files", _REFUSE
                )
        return member

    def _read_member(self, member: tarfile.TarInfo, limit: int) -> bytes:
        if member.size > limit:
            raise SecurityError(
                f"bundle member {member.name} is {member.size} bytes, more than the {limit} allowed", _REFUSE
            )
        try:
            handle = self._tar.extractfile(member)
            data = handle.read() if handle is not None else b""
        except _READ_ERRORS as exc:
            raise _corrupt(self.path, exc) from None
        if len(data) != member.size:
            raise _corrupt(self.path, EOFError(f"{member.name} ends early"))
        return data

    def read_head(self) -> tuple[bytes, bytes | None]:
        """The manifest's bytes and the signature's bytes (None when the bundle is unsigned)."""
        first = self._next()
        if first is None or first.name != MANIFEST_NAME or not first.isfile():
            raise SecurityError(
                f"bundle {self.path} does not start with {MANIFEST_NAME}",
                "Pass a bundle made by edgekit bundle (a build folder or other tar.gz is not a bundle)",
            )
        manifest = self._read_member(first, _MAX_MANIFEST)
        second = self._next()
        if second is not None and second.name == SIGNATURE_NAME and second.isfile():
            return manifest, self._read_member(second, _MAX_SIGNATURE)
        self._pending = second
        return manifest, None

    def extract(self, files: dict[str, FileEntry], destination: Path) -> None:
        """Write exactly the ``files`` (checked for size and sha256) into the empty folder ``destination``.

        Raises SecurityError for an extra, duplicate, missing, resized or
        changed file, and for a truncated stream; the caller removes
        ``destination`` on failure.
        """
        parents = {p.as_posix() for name in files for p in Path(name).parents}
        seen: set[str] = set()
        while (member := self._next()) is not None:
            name = member.name
            if member.isdir():
                folder = name.rstrip("/")
                if folder in parents and folder not in seen:
                    seen.add(folder)
                    continue  # a folder that holds listed files: harmless, nothing to write
                raise SecurityError(f"bundle holds a folder {name!r} the signed manifest does not list "
                                    "(or lists it twice)", _REFUSE)
            if name in (MANIFEST_NAME, SIGNATURE_NAME) or name in seen:
                raise SecurityError(f"bundle holds {name!r} more than once", _REFUSE)
            entry = files.get(name)
            if entry is None:
                raise SecurityError(
                    f"bundle holds an extra file {name!r} that the signed manifest does not list", _REFUSE
                )
            if member.size != entry.size_bytes:
                raise SecurityError(
                    f"bundle file {name} is {member.size} bytes but the signed manifest says {entry.size_bytes}",
                    _REFUSE,
                )
            seen.add(name)
            self._write_member(member, entry, destination)
        missing = sorted(set(files) - seen)  # seen holds folders too; files never share a folder's name
        if missing:
            raise SecurityError(
                f"bundle is missing {len(missing)} file(s) the signed manifest lists: {', '.join(missing[:5])}", _REFUSE
            )
        self._drain()

    def _write_member(self, member: tarfile.TarInfo, entry: FileEntry, destination: Path) -> None:
        target = destination.joinpath(*member.name.split("/"))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except (FileExistsError, NotADirectoryError):
            raise SecurityError(f"bundle member {member.name!r} collides with another member's path", _REFUSE) from None
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out:
            try:
                source = self._tar.extractfile(member)
                while source is not None and (chunk := source.read(_CHUNK)):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
            except _READ_ERRORS as exc:
                raise _corrupt(self.path, exc) from None
            out.flush()
            os.fsync(out.fileno())  # the store renames this folder into place: its bytes must be on disk first
        if written != entry.size_bytes:
            raise _corrupt(self.path, EOFError(f"{member.name} ends early"))
        if digest.hexdigest() != entry.sha256:
            raise SecurityError(
                f"bundle file {member.name} does not match its sha256 in the signed manifest (it was changed)",
                _REFUSE,
            )

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bundle file (complete once ``extract`` has returned)."""
        return self._hashing.digest.hexdigest()

    def _drain(self) -> None:
        # Reading to the end makes zlib check the gzip CRC and length trailer, so a
        # bundle cut short after the last member is still caught.
        try:
            left = self._gz.read(_MAX_TRAILER + 1)
            if len(left) > _MAX_TRAILER or left.count(0) != len(left) or self._gz.read(1):
                raise SecurityError(f"bundle {self.path} has unexpected data after its last file", _REFUSE)
        except _Refused as exc:
            raise SecurityError(f"bundle {self.path} holds {exc}", _REFUSE) from None
        except _READ_ERRORS as exc:
            raise _corrupt(self.path, exc) from None


@contextmanager
def open_bundle(path: Path) -> Iterator[BundleReader]:
    """Open a bundle for one forward pass; refuse anything that is not a gzip stream."""
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"bundle {path} does not exist", "Check the path") from None
    except OSError as exc:
        raise InputError(
            f"cannot read bundle {path}: {exc.strerror or exc}", "Check the path and permissions"
        ) from None
    with raw:
        if path.is_dir() or raw.read(2) != GZIP_MAGIC:
            raise SecurityError(
                f"{path} is not a tar.gz bundle (no gzip header)", "Pass a .tar.gz made by edgekit bundle"
            )
        raw.seek(0)
        yield BundleReader(path, raw)
