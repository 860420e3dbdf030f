"""The prediction audit trail: a hash chain that names every removed, edited or reordered record.

Real files in tmp_path, no mocks. Tampering is done the way an attacker or a
power cut would: by rewriting, truncating or deleting the files on disk.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from edgekit.errors import InputError
from edgekit.release.manifest import canonical_bytes
from edgekit.runtime.audit import GENESIS, AuditLog, find, record_hash, verify

ARTIFACT = "ab" * 32
KEY_ID = "cd" * 32


def prediction(index: int, version: str = "1.0.0", arm: str = "control") -> dict[str, Any]:
    """A record as the runtime writes it; one per minute from 2026-12-03 00:00 UTC."""
    return {
        "time": f"2026-12-03T{index // 60 % 24:02d}:{index % 60:02d}:00.000Z",
        "arm": arm,
        "model": "digits-cnn",
        "version": version,
        "artifact_sha256": ARTIFACT,
        "key_id": KEY_ID,
        "input_digest": digest(index),
        "output": [index % 10, 0.25],
        "latency_ms": 1.5,
        "cached": False,
        "error": None,
    }


def digest(index: int) -> str:
    """The input digest of prediction ``index``: distinct in every prefix that matters."""
    return hashlib.sha256(str(index).encode()).hexdigest()


def write_log(path: Path, count: int, *, max_bytes: int = 4000, keep: int = 20) -> Path:
    """A log of ``count`` records, rotated every ~12 records with the defaults.

    fsync every 25 records keeps the suite fast on a busy disk; the tests that reopen logs use the default (1).
    """
    with AuditLog(path, max_bytes=max_bytes, keep=keep, sync_every=25) as log:
        for index in range(count):
            log.append(prediction(index))
    return path


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def locate(path: Path, seq: int) -> tuple[Path, int]:
    """The file and 1-based line holding ``seq``."""
    for file in [*sorted(path.parent.glob(path.name + ".[0-9]*"), key=lambda f: -int(f.suffix[1:])), path]:
        for number, line in enumerate(lines_of(file), 1):
            if json.loads(line)["seq"] == seq:
                return file, number
    raise AssertionError(f"seq {seq} not found")


def rewrite(file: Path, number: int, change) -> None:
    """Replace line ``number`` of ``file`` (1-based) by ``change(record)`` written canonically; None deletes it."""
    lines = lines_of(file)
    record = change(json.loads(lines[number - 1]))
    lines[number - 1] = b"" if record is None else canonical_bytes(record) + b"\n"
    file.write_bytes(b"".join(lines))


def seqs_named(verification) -> set[int]:
    return {problem.seq for problem in verification.problems}


# ---------------------------------------------------------------------------- writing and verifying


def test_a_thousand_records_across_rotated_files_verify(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 1000, max_bytes=100_000, keep=10)
    result = verify(log)
    assert result.ok, result.problems
    assert (result.records, result.first_seq, result.last_seq) == (1000, 0, 999)
    assert len(result.files) >= 3 and result.files[-1] == str(log)
    assert all(Path(name).stat().st_size <= 100_000 for name in result.files)
    first = json.loads(lines_of(Path(result.files[0]))[0])
    assert first["prev"] == GENESIS and first["seq"] == 0
    for name in result.files:  # every line is canonical JSON whose hash covers the rest of the record
        for line in lines_of(Path(name)):
            record = json.loads(line)
            assert canonical_bytes(record) + b"\n" == line and record_hash(record) == record["hash"]
    # The chain continues across files: a new file's first record links to the old file's last.
    last_of_oldest = json.loads(lines_of(Path(result.files[0]))[-1])
    assert json.loads(lines_of(Path(result.files[1]))[0])["prev"] == last_of_oldest["hash"]
    assert result.as_dict()["ok"] is True


def test_append_returns_the_record_with_seq_prev_and_hash(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.log") as log:
        first = log.append(prediction(0))
        second = log.append(prediction(1))
    assert (first["seq"], first["prev"], second["seq"], second["prev"]) == (0, GENESIS, 1, first["hash"])
    assert second["hash"] == record_hash(second) and "seq" not in prediction(1)


def test_an_edited_record_is_named(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 60)
    file, number = locate(log, 25)
    rewrite(file, number, lambda r: {**r, "version": "6.6.6"})
    result = verify(log)
    assert not result.ok
    assert [(p.file, p.line, p.seq) for p in result.problems] == [(str(file), number, 25)]
    assert "edited" in result.problems[0].message


def test_an_edited_record_with_a_recomputed_hash_is_named(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 60)
    file, number = locate(log, 25)

    def forge(record: dict[str, Any]) -> dict[str, Any]:
        forged = {**record, "output": [7, 0.99]}
        return {**forged, "hash": record_hash(forged)}

    rewrite(file, number, forge)
    result = verify(log)
    assert not result.ok and (str(file), number, 25) in {(p.file, p.line, p.seq) for p in result.problems}


def test_a_deleted_middle_record_is_named(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 60)
    rewrite(*locate(log, 30), lambda r: None)
    result = verify(log)
    assert not result.ok and result.records == 59
    assert len(result.problems) == 1 and "seq 30 are missing" in result.problems[0].message
    assert (result.problems[0].seq, result.problems[0].file) == (31, str(locate(log, 31)[0]))


def test_swapped_records_are_named(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 10, max_bytes=1_000_000)
    lines = lines_of(log)
    lines[4], lines[5] = lines[5], lines[4]
    log.write_bytes(b"".join(lines))
    result = verify(log)
    assert not result.ok
    assert seqs_named(result) == {4, 5} and all("out of order" in p.message for p in result.problems)
    assert {p.line for p in result.problems} == {5, 6}


def test_a_deleted_last_record_is_caught_by_the_head(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 30)
    lines = lines_of(log)
    log.write_bytes(b"".join(lines[:-1]))
    result = verify(log)
    assert not result.ok
    assert [p.seq for p in result.problems] == [29] and "missing at the end" in result.problems[0].message


def test_a_missing_head_is_a_problem(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 5)
    (tmp_path / "audit.log.head").unlink()
    result = verify(log)
    assert not result.ok and "head file is missing" in result.problems[0].message


def test_a_dropped_middle_rotated_file_is_named(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 60)
    middle = tmp_path / "audit.log.2"
    lost = [json.loads(line)["seq"] for line in lines_of(middle)]
    middle.unlink()
    result = verify(log)
    assert not result.ok and len(result.problems) == 1
    assert f"seq {lost[0]}..{lost[-1]} are missing" in result.problems[0].message


def test_reordered_rotated_files_fail(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 60)
    two, three = tmp_path / "audit.log.2", tmp_path / "audit.log.3"
    content = two.read_bytes()
    two.write_bytes(three.read_bytes())
    three.write_bytes(content)
    result = verify(log)
    assert not result.ok and any("out of order" in p.message for p in result.problems)


def test_records_rotated_away_are_accepted_and_reported(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 100, keep=2)
    result = verify(log)
    assert result.ok, result.problems
    assert len(result.files) == 3 and result.first_seq > 0 and result.last_seq == 99
    assert f"chain starts at seq {result.first_seq} (earlier records rotated away)" in result.notes
    # Deleting the oldest kept file by hand is not rotation: the head knows where the kept files start.
    Path(result.files[0]).unlink()
    after = verify(log)
    assert not after.ok and f"seq {result.first_seq}.." in after.problems[0].message


def test_a_torn_last_line_is_reported_and_writing_resumes_on_a_fresh_line(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 5, max_bytes=1_000_000)
    torn = canonical_bytes({**prediction(5), "seq": 5})[:40]  # a power cut in the middle of the write
    with open(log, "ab") as writer:
        writer.write(torn)
    result = verify(log)
    assert not result.ok
    assert [(p.file, p.line) for p in result.problems] == [(str(log), 6)] and "torn" in result.problems[0].message

    with AuditLog(log) as reopened:
        record = reopened.append(prediction(5))
    assert record["seq"] == 5 and record["prev"] == json.loads(lines_of(log)[4])["hash"]
    assert lines_of(log)[5] == torn + b"\n"  # the torn bytes stay; the record starts on its own line
    after = verify(log)
    assert after.ok, after.problems
    assert after.last_seq == 5 and any(note.startswith(f"{log}:6: not a record") for note in after.notes)


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 20)
    with AuditLog(log, max_bytes=4000, keep=20) as reopened:
        record = reopened.append(prediction(20))
    assert record["seq"] == 20
    result = verify(log)
    assert result.ok and (result.records, result.last_seq) == (21, 20)


def test_reopening_after_the_tail_was_removed_keeps_the_gap_visible(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", 10, max_bytes=1_000_000)
    log.write_bytes(b"".join(lines_of(log)[:-2]))
    with AuditLog(log) as reopened:
        assert reopened.append(prediction(10))["seq"] == 10  # fresh records cannot paper over the removal
    result = verify(log)
    assert not result.ok and "seq 8..9 are missing" in result.problems[0].message


def test_eight_threads_append_one_unbroken_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with AuditLog(log, max_bytes=20_000, keep=50, sync_every=4) as shared:
        def work(thread: int) -> None:
            for index in range(50):
                shared.append(prediction(thread * 50 + index, arm=f"t{thread}"))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    result = verify(log)
    assert result.ok, result.problems
    assert result.records == 400 and len(result.files) >= 3
    assert sorted(r["seq"] for r in find(log)) == list(range(400))


def test_sync_every_batches_fsyncs_and_close_leaves_the_head_current(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with AuditLog(log, sync_every=16) as batched:
        for index in range(40):
            last = batched.append(prediction(index))
    head = json.loads((tmp_path / "audit.log.head").read_bytes())
    assert (head["seq"], head["hash"]) == (39, last["hash"]) and verify(log).ok


def test_records_the_log_cannot_take_are_refused(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.log") as log:
        with pytest.raises(InputError, match="set by the log"):
            log.append({**prediction(0), "seq": 3})
        with pytest.raises(InputError, match="not JSON-able"):
            log.append({**prediction(0), "output": [float("nan")]})
        assert log.append(prediction(0))["seq"] == 0  # a refused record does not use up a seq
    with pytest.raises(InputError, match="out of range"):
        AuditLog(tmp_path / "b.log", keep=0)


def test_verify_refuses_what_is_not_an_audit_log(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no audit log"):
        verify(tmp_path / "missing.log")
    other = tmp_path / "notes.txt"
    other.write_text("hello\nworld\n")
    with pytest.raises(InputError, match="not an audit log"):
        verify(other)
    with pytest.raises(InputError, match="not an audit log"):
        list(find(other))


# ---------------------------------------------------------------------------- finding


def test_find_by_input_digest_and_time(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with AuditLog(log, max_bytes=4000, keep=20) as writer:
        for index in range(100):
            writer.append(prediction(index, version="1.0.0" if index < 50 else "1.1.0"))
    [match] = find(log, input_digest=digest(77))
    assert (match["seq"], match["version"]) == (77, "1.1.0")
    assert [r["seq"] for r in find(log, input_digest=digest(77).upper()[:16])] == [77]  # prefix, any case
    window = [r["seq"] for r in find(log, since="2026-12-03T00:30:00Z", until="2026-12-03T00:34:00.000Z")]
    assert window == [30, 31, 32, 33, 34]
    assert [r["seq"] for r in find(log, since="2026-12-03T01:35:00+00:00")] == [95, 96, 97, 98, 99]
    assert len(list(find(log, since="2026-12-03", until="2026-12-03"))) == 100  # a date covers its whole day
    assert list(find(log, until="2026-12-02")) == []
    with pytest.raises(InputError, match="--since 'yesterday'"):
        find(log, since="yesterday")


# ---------------------------------------------------------------------------- the command line


def test_cli_verify_passes_and_fails_with_json(tmp_path: Path, rt) -> None:  # noqa: ANN001
    log = write_log(tmp_path / "audit.log", 40)
    text = rt.run("audit", "verify", log)
    assert text.exit_code == 0 and "chain intact" in text.stdout and "40 record(s), seq 0..39" in text.stdout
    good = rt.run("audit", "verify", log, "--json")
    assert good.exit_code == 0 and good.json()["ok"] is True and good.json()["records"] == 40

    file, number = locate(log, 17)
    rewrite(file, number, lambda r: {**r, "arm": "candidate"})
    bad = rt.run("audit", "verify", log, "--json")
    assert bad.exit_code == 1
    report = bad.json()  # the report, not a second error document
    assert report["ok"] is False
    assert [(p["file"], p["line"], p["seq"]) for p in report["problems"]] == [(str(file), number, 17)]
    shown = rt.run("audit", "verify", log)
    assert shown.exit_code == 1 and f"{file}:{number} (seq 17)" in shown.stdout
    assert "fails verification" in shown.stderr


def test_cli_find_prints_the_release_that_decided(tmp_path: Path, rt) -> None:  # noqa: ANN001
    log = write_log(tmp_path / "audit.log", 30)
    table = rt.run("audit", "find", log, "--input-digest", digest(12))
    assert table.exit_code == 0
    assert "1.0.0" in table.stdout and ARTIFACT[:12] in table.stdout and KEY_ID[:16] in table.stdout
    assert ARTIFACT[:13] not in table.stdout  # digests are shortened
    as_json = rt.run("audit", "find", log, "--since", "2026-12-03T00:28:00Z", "--json")
    assert as_json.exit_code == 0 and [r["seq"] for r in as_json.json()] == [28, 29]
    none = rt.run("audit", "find", log, "--input-digest", "not-hex")
    assert none.exit_code == 0 and "no record matches" in none.stdout
    assert rt.run("audit", "find", log, "--input-digest", "not-hex", "--json").json() == []


def test_cli_on_a_missing_log_is_bad_input(tmp_path: Path, rt) -> None:  # noqa: ANN001
    for command in ("verify", "find"):
        outcome = rt.run("audit", command, tmp_path / "nope.log")
        assert outcome.exit_code == 2, outcome
        assert "no audit log at" in outcome.stderr and "Traceback" not in outcome.stderr + outcome.stdout
    as_json = rt.run("audit", "verify", tmp_path / "nope.log", "--json")
    assert as_json.exit_code == 2 and as_json.json()["ok"] is False
    bad_time = rt.run("audit", "find", write_log(tmp_path / "a.log", 2), "--since", "soon")
    assert bad_time.exit_code == 2 and "--since 'soon'" in bad_time.stderr
