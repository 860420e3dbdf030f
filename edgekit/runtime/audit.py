"""The prediction audit trail: an append-only, hash-chained JSON-lines log.

Every line is the canonical JSON (sorted keys, compact) of one record plus
three fields the log adds:

- ``seq``: 0, 1, 2, ... over the log's whole life, across rotations;
- ``prev``: the ``hash`` of the record before ("0" * 64 for the first ever);
- ``hash``: the sha256 (hex) of the canonical bytes of the record without ``hash``.

``verify`` recomputes every hash and checks the ``prev`` links and consecutive
``seq``, so an edited, removed, inserted or reordered record is found and
named (file, line, seq). A head file beside the log (``<log>.head``) holds
the last record's seq and hash and the first seq the retained files must
start at, so removing records from the end (or a whole old file) is found
too. Rotation renames the full active file to ``<log>.1`` (older ones shift
to ``.2`` ... ``.keep``, the oldest is dropped); the chain runs on across files.

What this proves, honestly: a chain without a key proves internal
consistency only. Someone who rewrites the whole log and its head
consistently is not detected. Anchoring the head's hash elsewhere (shipping
it off the device, printing it into a signed report) is what bounds that:
a log whose record ``seq N`` no longer has the anchored hash was rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

from edgekit.artifact import fsync_dir
from edgekit.errors import InputError, InternalError
from edgekit.release.manifest import canonical_bytes

GENESIS = "0" * 64  # the ``prev`` of the first record ever written
ADDED_FIELDS = ("seq", "prev", "hash")
HEAD_SIZE = 192  # the head is overwritten in place with exactly this many bytes (well inside one disk sector)
_TAIL_CHUNKS = (64 * 1024, 1024 * 1024, 16 * 1024 * 1024)  # how far back to look for the last record on reopen


# ---------------------------------------------------------------------------- writing


class AuditLog:
    """Append-only, hash-chained prediction log at ``path`` (JSON lines), thread-safe.

    One writer per log: two ``AuditLog`` objects (or processes) on one path
    fork the chain, which ``verify`` then reports. Reopening continues the
    chain from the head file (or, if the log is newer, from its last record).
    """

    def __init__(self, path: Path, *, max_bytes: int = 16 * 1024 * 1024, keep: int = 4, sync_every: int = 1) -> None:
        if max_bytes < 1 or keep < 1 or sync_every < 1:
            raise InputError(
                f"audit log settings max_bytes={max_bytes}, keep={keep}, sync_every={sync_every} are out of range",
                "Use max_bytes >= 1, keep >= 1 (rotated files kept) and sync_every >= 1 (records per fsync)",
            )
        self.path = Path(path)
        self.max_bytes, self.keep, self.sync_every = max_bytes, keep, sync_every
        if self.path.is_dir():
            raise InputError(f"audit log {self.path} is a folder", "Give a file path for the audit log")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._next_seq, self._last_hash, self._start = _resume(self.path)
        self._fd = -1
        self._head_fd = -1
        self._unsynced = 0
        self._open_active()
        try:
            self._write_head_atomically()
        except BaseException:
            os.close(self._fd)
            raise

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add seq, prev and hash to a copy of ``record`` (JSON-able; caller gives time, arm, model, version,
        artifact_sha256, key_id, input_digest, output, latency_ms, cached, error ...), write it as one line, return it.

        Raises InputError for a record that already has seq/prev/hash or is not JSON-able (NaN included).
        """
        taken = [name for name in ADDED_FIELDS if name in record]
        if taken:
            raise InputError(f"audit record fields {', '.join(taken)} are set by the log",
                             "Leave seq, prev and hash out of the record")
        with self._lock:
            if self._fd < 0:
                raise InternalError(f"append to the closed audit log {self.path}")
            body = {**record, "seq": self._next_seq, "prev": self._last_hash}
            try:
                digest = hashlib.sha256(canonical_bytes(body)).hexdigest()
            except (TypeError, ValueError) as exc:
                raise InputError(f"audit record is not JSON-able: {exc}",
                                 "Give plain numbers, strings, lists and dicts (no NaN; convert arrays with tolist)"
                                 ) from exc
            entry = {**body, "hash": digest}
            line = canonical_bytes(entry) + b"\n"
            if self._size and self._size + len(line) > self.max_bytes:
                try:
                    self._rotate()
                except OSError:
                    if self._fd < 0:  # keep logging into whichever active file there is; the chain is unaffected
                        self._open_active()
                    raise
            self._write_line(line)
            self._next_seq += 1
            self._last_hash = digest
            self._unsynced += 1
            due = self._unsynced >= self.sync_every
            if due:
                os.fsync(self._fd)  # the record is durable before the head says it exists
                self._unsynced = 0
            self._write_head_in_place(sync=due)
        return entry

    def close(self) -> None:
        """Flush and fsync the log, write the head atomically, release the files. Calling it twice is harmless."""
        with self._lock:
            if self._fd < 0:
                return
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._write_head_atomically(reopen=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (called with the lock held, or from __init__)

    def _open_active(self) -> None:
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        # A power cut can tear the last line: start on a fresh line so the torn one never corrupts the next.
        self._needs_newline = self._size > 0 and _last_byte(self.path, self._size) != b"\n"
        if created:
            fsync_dir(self.path.parent)

    def _write_line(self, line: bytes) -> None:
        data = (b"\n" if self._needs_newline else b"") + line
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            # Half a line may be on disk (a full disk): the next record must start on a fresh line.
            self._size = os.fstat(self._fd).st_size
            self._needs_newline = self._size > 0 and _last_byte(self.path, self._size) != b"\n"
            raise
        self._size += len(data)
        self._needs_newline = False

    def _head_bytes(self) -> bytes:
        document = canonical_bytes({"hash": self._last_hash, "seq": self._next_seq - 1, "start": self._start})
        return document.ljust(HEAD_SIZE - 1) + b"\n"

    def _write_head_in_place(self, sync: bool) -> None:
        """Overwrite the fixed-size head: one small pwrite per record, no rename."""
        os.pwrite(self._head_fd, self._head_bytes(), 0)
        if sync:
            getattr(os, "fdatasync", os.fsync)(self._head_fd)

    def _write_head_atomically(self, reopen: bool = True) -> None:
        """Replace the head file through a temporary file and a rename, so it is never half written."""
        head = head_path(self.path)
        temporary = head.with_name(f".{head.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, self._head_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, head)
        fsync_dir(head.parent)
        if self._head_fd >= 0:
            os.close(self._head_fd)
            self._head_fd = -1
        if reopen:
            self._head_fd = os.open(head, os.O_RDWR)

    def _rotate(self) -> None:
        """Active file -> .1, .i -> .i+1, files beyond ``keep`` dropped; a new empty active file."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._unsynced = 0
        rotated = rotated_files(self.path)
        dropping = [index for index in rotated if index >= self.keep]
        if dropping:
            # The head learns where the retained chain now starts before anything is deleted, so a crash
            # in between leaves more records than the head promises, never fewer.
            survivors = [index for index in rotated if index < self.keep]
            oldest = rotated[max(survivors)] if survivors else self.path
            first = _first_seq(oldest)
            self._start = first if first is not None else self._start
            self._write_head_atomically()
        for index in sorted(rotated, reverse=True):
            if index >= self.keep:
                rotated[index].unlink()
            else:
                os.replace(rotated[index], sibling(self.path, index + 1))
        os.replace(self.path, sibling(self.path, 1))
        fsync_dir(self.path.parent)
        self._open_active()
        self._write_head_atomically()


def head_path(path: Path) -> Path:
    """The head file of the log at ``path``: ``<log>.head``."""
    return path.with_name(path.name + ".head")


def sibling(path: Path, index: int) -> Path:
    """The rotated file number ``index`` of the log at ``path``: ``<log>.<index>`` (higher is older)."""
    return path.with_name(f"{path.name}.{index}")


def rotated_files(path: Path) -> dict[int, Path]:
    """The rotated files that exist beside ``path``, by number (gaps allowed: a crash mid-rotation leaves one)."""
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]{0,5})")
    found: dict[int, Path] = {}
    if path.parent.is_dir():
        for entry in path.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and entry.is_file():
                found[int(match.group(1))] = entry
    return dict(sorted(found.items()))


def log_files(path: Path) -> list[Path]:
    """Every file of the log, oldest first: rotated files from the highest number down, then the active file."""
    files = [rotated for _, rotated in sorted(rotated_files(path).items(), reverse=True)]
    return files + [path] if path.is_file() else files


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as reader:
        reader.seek(size - 1)
        return reader.read(1)


# ---------------------------------------------------------------------------- reading


def _parse_record(line: bytes) -> dict[str, Any] | None:
    """The record on ``line`` when it is a JSON object with an int seq and str prev/hash, else None."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    seq, prev, digest = record.get("seq"), record.get("prev"), record.get("hash")
    if type(seq) is not int or not isinstance(prev, str) or not isinstance(digest, str):
        return None
    return record


def record_hash(record: dict[str, Any]) -> str:
    """The hash a record should carry: sha256 of the canonical bytes of everything but ``hash``."""
    return hashlib.sha256(canonical_bytes({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _first_seq(path: Path) -> int | None:
    """The seq of the first record in ``path`` (None when its first line is not a record)."""
    try:
        with open(path, "rb") as reader:
            record = _parse_record(reader.readline().rstrip(b"\n"))
    except OSError:
        return None
    return record["seq"] if record else None


def _last_record(path: Path) -> dict[str, Any] | None:
    """The last line of ``path`` that is a record with a valid hash (torn and damaged lines skipped)."""
    size = path.stat().st_size
    with open(path, "rb") as reader:
        for chunk in (*_TAIL_CHUNKS, size):
            start = max(0, size - chunk)
            reader.seek(start)
            lines = reader.read(size - start).split(b"\n")
            if start > 0:
                lines = lines[1:]  # the first piece may be the end of a longer line
            for line in reversed(lines):
                record = _parse_record(line)
                if record is not None and record_hash(record) == record["hash"]:
                    return record
            if start == 0:
                return None
    return None


@dataclass(frozen=True)
class Head:
    """What the head file says: the last record's seq and hash, and the seq the retained files start at."""

    seq: int
    hash: str
    start: int


def read_head(path: Path) -> Head | None:
    """The head of the log at ``path``; None when there is no head file. Raises ValueError when it is damaged."""
    try:
        raw = head_path(path).read_bytes()
    except FileNotFoundError:
        return None
    document = json.loads(raw)
    if not isinstance(document, dict):
        raise ValueError("the head is not a JSON object")
    seq, digest, start = document.get("seq"), document.get("hash"), document.get("start")
    if type(seq) is not int or type(start) is not int or not isinstance(digest, str) or seq < -1:
        raise ValueError("head fields seq, hash, start are missing or of the wrong type")
    return Head(seq, digest, start)


def _resume(path: Path) -> tuple[int, str, int]:
    """Where a reopened log continues: (next seq, last hash, first retained seq).

    The head wins when it is as new as the log: continuing from it keeps a removed or edited tail
    visible as a break in the chain, instead of papering over it with fresh records.
    """
    try:
        head = read_head(path)
    except (OSError, ValueError):
        head = None  # a damaged head (verify reports it); fall back to the log itself
    last = None
    for file in reversed(log_files(path)):
        last = _last_record(file)
        if last is not None:
            break
    if head is not None and (last is None or head.seq >= last["seq"]):
        return head.seq + 1, head.hash, head.start
    if last is None:
        return 0, GENESIS, 0
    files = log_files(path)
    first = _first_seq(files[0]) if files else None
    start = head.start if head is not None else first if first is not None else last["seq"]
    return last["seq"] + 1, last["hash"], start


# ---------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Problem:
    """One finding: which file, line number (1-based), seq (if known) and what is wrong, in words."""

    file: str
    line: int | None
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}{'' if self.seq is None else f' (seq {self.seq})'}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "seq": self.seq, "message": self.message}


@dataclass(frozen=True)
class Verification:
    """The outcome of ``verify``: ok when no problem was found; notes are facts that are not failures."""

    ok: bool
    records: int
    first_seq: int | None
    last_seq: int | None
    files: tuple[str, ...]
    problems: tuple[Problem, ...]
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "files": list(self.files),
            "problems": [problem.as_dict() for problem in self.problems],
            "notes": list(self.notes),
        }


@dataclass
class _Place:
    """A record's place: file, line and seq (for messages)."""

    file: str
    line: int
    seq: int

    def __str__(self) -> str:
        return f"seq {self.seq} at {self.file}:{self.line}"


@dataclass
class _Gap:
    """Seqs ``first``..``last`` were expected before the record at ``after``/``before`` but not seen there."""

    first: int
    last: int
    after: _Place | None
    before: _Place


@dataclass
class _Walk:
    """The state of one pass over the log's lines, oldest first."""

    head: Head | None
    log_file: str
    head_file: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: int = 0
    first: _Place | None = None
    last: _Place | None = None
    last_hash: str | None = None
    damaged: list[tuple[str, int]] = field(default_factory=list)  # non-record lines since the last record
    gaps: list[_Gap] = field(default_factory=list)
    out_of_order: set[int] = field(default_factory=set)
    head_hash_seen: str | None = None  # the hash of the record whose seq the head names


def verify(path: Path) -> Verification:
    """Check the whole chain of the log at ``path`` (rotated files too), naming every problem.

    Raises InputError when there is no log at ``path`` or it is not an audit log at all.
    """
    path = Path(path)
    files = _existing_files(path)
    walk = _Walk(head=None, log_file=str(path), head_file=str(head_path(path)))
    try:
        walk.head = read_head(path)
        if walk.head is None:
            walk.problems.append(Problem(walk.head_file, None, None,
                                         "the head file is missing, so removed records at the end cannot be detected"))
    except (OSError, ValueError) as exc:
        walk.problems.append(Problem(walk.head_file, None, None, f"the head file is damaged ({exc})"))
    for file in files:
        for number, line in _lines(file):
            _check_line(walk, str(file), number, line)
    if walk.records == 0 and walk.damaged and not head_path(path).exists():
        raise _not_a_log(path)
    _finish(walk)
    order = {str(file): index for index, file in enumerate(files)}  # problems in reading order; the head's last
    walk.problems.sort(key=lambda problem: (order.get(problem.file, len(order)), problem.line or 0))
    return Verification(
        ok=not walk.problems,
        records=walk.records,
        first_seq=walk.first.seq if walk.first else None,
        last_seq=walk.last.seq if walk.last else None,
        files=tuple(str(file) for file in files),
        problems=tuple(walk.problems),
        notes=tuple(walk.notes),
    )


def _existing_files(path: Path) -> list[Path]:
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an audit log", "Give the log file (edgekit serve --audit-log)")
    files = log_files(path)
    if not files and not head_path(path).exists():
        raise InputError(f"no audit log at {path}", "Check the path: give the log file the runtime writes")
    return files


def _not_a_log(path: Path) -> InputError:
    return InputError(f"{path} is not an audit log: no line is a JSON record with seq, prev and hash",
                      "Give the JSON-lines file the runtime's audit log writes")


def _lines(file: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its newline); a last line without a newline is yielded too."""
    with open(file, "rb") as reader:
        for number, line in enumerate(reader, 1):
            yield number, line[:-1] if line.endswith(b"\n") else line


def _check_line(walk: _Walk, file: str, number: int, line: bytes) -> None:
    """Check one line against its own hash and against the record before it."""
    record = _parse_record(line)
    if record is None:
        walk.damaged.append((file, number))
        return
    place = _Place(file, number, record["seq"])
    intact = record_hash(record) == record["hash"]
    if not intact:
        walk.problems.append(Problem(file, number, place.seq,
                                     "record edited: its hash does not match its content"))
    elif canonical_bytes(record) != line:
        walk.problems.append(Problem(file, number, place.seq,
                                     "record edited: its line is not the canonical JSON the log writes"))
    if walk.head is not None and place.seq == walk.head.seq:
        walk.head_hash_seen = record["hash"]
    walk.records += 1
    if walk.last is None:
        _check_start(walk, place, record)
    elif place.seq <= walk.last.seq:
        walk.out_of_order.add(place.seq)
        walk.problems.append(Problem(file, number, place.seq,
                                     f"record out of order: it comes after {walk.last} (records reordered "
                                     "or duplicated)"))
        _report_damaged(walk, linked=False)
        return  # the chain continues from the record before, so the records after it still link
    elif place.seq > walk.last.seq + 1:
        walk.gaps.append(_Gap(walk.last.seq + 1, place.seq - 1, walk.last, place))
        _report_damaged(walk, linked=False)
    elif record["prev"] != walk.last_hash:
        if intact:  # this record is as written, so the one before it is not the one it was chained to
            walk.problems.append(Problem(walk.last.file, walk.last.line, walk.last.seq,
                                         f"record altered or replaced: the next record ({place}) links to a "
                                         "different hash"))
        else:
            walk.problems.append(Problem(file, number, place.seq, f"its prev does not link to {walk.last}"))
        _report_damaged(walk, linked=False)
    else:
        _report_damaged(walk, linked=True)
    walk.last, walk.last_hash = place, record["hash"]


def _check_start(walk: _Walk, place: _Place, record: dict[str, Any]) -> None:
    """The first record: seq 0 must link to the genesis; a later seq is where rotation left the chain's start."""
    walk.first = place
    _report_damaged(walk, linked=False, at_start=True)
    if place.seq == 0:
        if record["prev"] != GENESIS:
            walk.problems.append(Problem(place.file, place.line, 0,
                                         "the first record ever does not link to the genesis hash"))
        return
    start = walk.head.start if walk.head is not None else place.seq
    if place.seq > start:
        walk.problems.append(Problem(place.file, place.line, place.seq,
                                     f"records seq {_span(start, place.seq - 1)} are missing at the start of the "
                                     f"log: the head file says the kept files start at seq {start}"))
    else:
        walk.notes.append(f"chain starts at seq {place.seq} (earlier records rotated away)")


def _report_damaged(walk: _Walk, linked: bool, at_start: bool = False) -> None:
    """Lines that are not records: harmless when the chain links across them (an interrupted write)."""
    for file, number in walk.damaged:
        if linked:
            walk.notes.append(f"{file}:{number}: not a record (an interrupted write); the chain links across it, "
                              "so no record was lost")
        else:
            where = "before the first record" if at_start else "where the chain breaks"
            walk.problems.append(Problem(file, number, None, f"damaged line {where}: not a valid record"))
    walk.damaged.clear()


def _finish(walk: _Walk) -> None:
    """Problems only visible at the end: torn last lines, gaps, and the log's end against the head."""
    for file, number in walk.damaged:
        walk.problems.append(Problem(file, number, None,
                                     "torn last line: not a valid record (a power cut mid-write, or an edit)"))
    for gap in walk.gaps:
        wanted = range(gap.first, gap.last + 1)
        lost = [seq for seq in wanted if seq not in walk.out_of_order]
        if not lost:
            walk.problems.append(Problem(gap.before.file, gap.before.line, gap.before.seq,
                                         f"record out of order: it comes before seq {_span(gap.first, gap.last)}"))
            continue
        between = f"between {gap.after} and {gap.before}" if gap.after else f"before {gap.before}"
        walk.problems.append(Problem(gap.before.file, gap.before.line, gap.before.seq,
                                     f"records seq {_seqs(lost)} are missing {between} (removed, or a rotated "
                                     "file is missing)"))
    _check_end(walk)


def _check_end(walk: _Walk) -> None:
    head = walk.head
    if head is None:
        return
    last = walk.last
    last_seq = last.seq if last else -1
    if head.seq > last_seq:
        where = (last.file, last.line + 1) if last else (walk.log_file, None)
        walk.problems.append(Problem(where[0], where[1], last_seq + 1,
                                     f"records seq {_span(last_seq + 1, head.seq)} are missing at the end: the head "
                                     f"file records seq {head.seq}"))
    elif head.seq >= 0 and walk.head_hash_seen is None:
        walk.problems.append(Problem(walk.head_file, None, head.seq, "the head names a record that is not in the log"))
    elif head.seq >= 0 and walk.head_hash_seen != head.hash:
        walk.problems.append(Problem(walk.head_file, None, head.seq,
                                     "record edited or replaced: its hash differs from the one the head file records"))
    if last is not None and head.seq < last.seq:
        walk.notes.append(f"records seq {_span(head.seq + 1, last.seq)} are newer than the head file "
                          "(a crash between writing a record and updating the head)")


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}..{last}"


def _seqs(seqs: list[int]) -> str:
    """Consecutive runs as ranges: [3, 4, 5, 9] -> '3..5, 9'."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return ", ".join(_span(first, last) for first, last in runs)


# ---------------------------------------------------------------------------- searching


def find(path: Path, *, input_digest: str | None = None, since: str | None = None,
         until: str | None = None) -> Iterator[dict[str, Any]]:
    """Records matching every filter given, from all files, oldest first (damaged lines skipped).

    ``input_digest`` matches a record's ``input_digest`` by prefix, case-insensitively; ``since`` and
    ``until`` take ISO-8601 UTC times ("2026-12-03T01:02:03.456Z") or dates ("2026-12-03", whose
    ``until`` covers that whole day) and compare with each record's ``time``. Raises InputError for a
    missing log, a file that is not an audit log, or a time it cannot read (before yielding anything).
    """
    path = Path(path)
    files = _existing_files(path)
    low = parse_time(since, "--since") if since else None
    high = parse_time(until, "--until", end_of_day=True) if until else None
    digest = input_digest.strip().lower() if input_digest is not None else None
    if digest == "":
        raise InputError("--input-digest is empty", "Give the input's hex digest (a prefix is enough)")
    if not _looks_like_log(path, files):
        raise _not_a_log(path)
    return _matches(files, digest, low, high)


def _looks_like_log(path: Path, files: list[Path]) -> bool:
    """A log has a head file, or its oldest non-empty file starts with a record."""
    if head_path(path).exists():
        return True
    for file in files:
        if file.stat().st_size:
            return _first_seq(file) is not None
    return True


def _matches(files: list[Path], digest: str | None, low: datetime | None,
             high: datetime | None) -> Iterator[dict[str, Any]]:
    for file in files:
        for _, line in _lines(file):
            record = _parse_record(line)
            if record is None:
                continue
            if digest is not None and not str(record.get("input_digest", "")).lower().startswith(digest):
                continue
            if low is not None or high is not None:
                when = _record_time(record)
                if when is None or (low is not None and when < low) or (high is not None and when > high):
                    continue
            yield record


def parse_time(text: str, option: str = "time", end_of_day: bool = False) -> datetime:
    """An aware UTC datetime from ISO-8601 ("...Z", an offset, or none: UTC) or a date.

    With ``end_of_day`` a bare date means its last instant, so ``--until 2026-12-03`` includes that day.
    """
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            moment = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return moment + timedelta(days=1, microseconds=-1) if end_of_day else moment
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{option} {text!r} is not a date or an ISO-8601 time",
                         "Use 2026-12-03 or 2026-12-03T01:02:03Z (UTC)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _record_time(record: dict[str, Any]) -> datetime | None:
    value = record.get("time")
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except InputError:
        return None
