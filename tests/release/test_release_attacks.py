"""Every attack the issue lists is refused by verify and install: exit 2, a clear message, nothing written."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgekit.release.manifest import canonical_bytes
from edgekit.release.signing import load_private_key, sign

Members = list[tuple[tarfile.TarInfo, bytes]]
Keys = Any  # conftest.Keys: private, public, other_private, other_public

ONNX = "raspberry-pi-4/digits-cnn.int8.onnx"
TFLITE = "raspberry-pi-4/digits-cnn.int8.tflite"


def read_bundle(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The members of a bundle, in order, with their data."""
    with tarfile.open(bundle, "r:gz") as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]  # type: ignore[union-attr]


def repack(destination: Path, members: list[tuple[tarfile.TarInfo, bytes]], compress: bool = True) -> Path:
    """Write ``members`` as a (tampered) bundle, the way an attacker would."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info = _copy(info)
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    raw = buffer.getvalue()
    if compress:
        raw = gzip.compress(raw, mtime=0)
    destination.write_bytes(raw)
    return destination


def _copy(info: tarfile.TarInfo) -> tarfile.TarInfo:
    clone = tarfile.TarInfo(info.name)
    for attr in ("size", "mtime", "mode", "type", "linkname", "uid", "gid", "uname", "gname", "devmajor", "devminor"):
        setattr(clone, attr, getattr(info, attr))
    return clone


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    """A fresh tar header."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


def _flip_byte(members: Members, keys: Keys) -> Members:
    out = []
    for info, data in members:
        if info.name == ONNX:
            data = data[:40] + bytes([data[40] ^ 0x01]) + data[41:]
        out.append((info, data))
    return out


def _drop(name: str) -> Callable[[Members, Keys], Members]:
    return lambda members, keys: [(i, d) for i, d in members if i.name != name]


def _add(info: tarfile.TarInfo, data: bytes = b"") -> Callable[[Members, Keys], Members]:
    return lambda members, keys: [*members, (info, data)]


def _resign(edit: Callable[[dict], None], with_other_key: bool = False, keep_old_signature: bool = False):
    def attack(members: Members, keys: Keys) -> Members:
        manifest = json.loads(members[0][1])
        edit(manifest)
        new_bytes = canonical_bytes(manifest)
        key = load_private_key(keys.other_private if with_other_key else keys.private)
        signature = members[1][1] if keep_old_signature else sign(new_bytes, key)
        return [(members[0][0], new_bytes), (members[1][0], signature), *members[2:]]

    return attack


def _raise_rollout(manifest: dict) -> None:
    manifest["release"]["rollout_percentage"] = 100
    manifest["release"]["channel"] = "beta"


def _break_schema(manifest: dict) -> None:
    manifest["release"]["rollout_percentage"] = 150


def _point_at_other_bytes(manifest: dict) -> None:
    manifest["files"][ONNX]["sha256"] = "0" * 64


def _duplicate_keys(members: Members, keys: Keys) -> Members:
    # Signed by the real key, but with a duplicate key two JSON parsers could read differently.
    text = members[0][1].decode()
    forged = text[:-1] + ',"schema_version":1}'
    new_bytes = forged.encode()
    return [(members[0][0], new_bytes), (members[1][0], sign(new_bytes, load_private_key(keys.private))), *members[2:]]


def _duplicate_member(members: Members, keys: Keys) -> Members:
    first = next((i, d) for i, d in members if i.name == ONNX)
    return [*members, first]


ATTACKS: dict[str, tuple[Callable[[Members, Keys], Members], str]] = {
    "flipped byte in an artifact": (_flip_byte, "does not match its sha256"),
    "missing file": (_drop(TFLITE), "missing 1 file"),
    "missing report": (_drop(TFLITE + ".report.json"), "missing 1 file"),
    "extra file": (_add(member("raspberry-pi-4/run.sh"), b"#!/bin/sh\n"), "extra file"),
    "manifest edited after signing": (_resign(_raise_rollout, keep_old_signature=True), "changed after signing"),
    "hashes edited after signing": (_resign(_point_at_other_bytes, keep_old_signature=True), "changed after signing"),
    "signature from another key": (_resign(_raise_rollout, with_other_key=True), "not by the trusted key"),
    "no signature": (_drop("manifest.sig"), "not signed"),
    "manifest fails the schema": (_resign(_break_schema), "does not match the edgekit manifest schema"),
    "duplicate JSON keys": (_duplicate_keys, "not valid JSON"),
    "duplicate member": (_duplicate_member, "more than once"),
    "absolute path": (_add(member("/etc/cron.d/evil"), b"x"), "absolute path"),
    "dot-dot path": (_add(member("raspberry-pi-4/../../evil"), b"x"), "contains '..'"),
    "symlink": (_add(member("raspberry-pi-4/link", tarfile.SYMTYPE, "/etc/passwd")), "symbolic link"),
    "hardlink": (_add(member("raspberry-pi-4/hard", tarfile.LNKTYPE, "manifest.json")), "hard link"),
    "character device": (_add(member("raspberry-pi-4/tty", tarfile.CHRTYPE)), "a device"),
    "block device": (_add(member("raspberry-pi-4/sda", tarfile.BLKTYPE)), "a device"),
    "fifo": (_add(member("raspberry-pi-4/pipe", tarfile.FIFOTYPE)), "FIFO"),
    "stray folder": (_add(member("other-target", tarfile.DIRTYPE)), "folder"),
}


@pytest.fixture()
def store(tmp_path: Path, keys: Keys, bundles: dict[str, Path], kit: ModuleType) -> Path:
    """A device store with 1.0.0 installed (the attacks pose as the 1.1.0 update)."""
    root = tmp_path / "store"
    outcome = kit.run("install", bundles["1.0.0"], "--into", root, "--key", keys.public, "--device-id", "dev-1")
    assert outcome.exit_code == 0, outcome.stderr
    return root


@pytest.fixture()
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile at an empty folder, so a test can prove verify left nothing behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _assert_refused(kit: ModuleType, bundle: Path, keys: Keys, store: Path, scratch: Path, expected: str) -> None:
    before = kit.snapshot(store)
    verified = kit.run("verify", bundle, "--key", keys.public)
    assert verified.exit_code == 2, verified
    assert expected in verified.stderr, verified.stderr
    assert verified.stderr.startswith("error: ") and "Traceback" not in verified.stderr
    assert list(scratch.iterdir()) == []
    installed = kit.run("install", bundle, "--into", store, "--key", keys.public, "--device-id", "dev-1", "--force")
    assert installed.exit_code == 2, installed
    assert expected in installed.stderr, installed.stderr
    assert kit.snapshot(store) == before


@pytest.mark.parametrize("name", list(ATTACKS))
def test_tampered_bundle_is_refused_and_store_unchanged(
    kit: ModuleType, name: str, tmp_path: Path, keys: Keys, bundles: dict[str, Path], store: Path, scratch: Path
) -> None:
    attack, expected = ATTACKS[name]
    tampered = repack(tmp_path / "tampered.tar.gz", attack(read_bundle(bundles["1.1.0"]), keys))
    _assert_refused(kit, tampered, keys, store, scratch, expected)


def test_the_untampered_bundle_passes_the_same_checks(
    kit: ModuleType, keys: Keys, bundles: dict[str, Path], store: Path, tmp_path: Path
) -> None:
    # Guards the attack tests: repacking alone (a different tar writer) must not be what they refuse.
    clean = repack(tmp_path / "clean.tar.gz", read_bundle(bundles["1.1.0"]))
    assert kit.run("verify", clean, "--key", keys.public).exit_code == 0
    assert kit.run("install", clean, "--into", store, "--key", keys.public, "--device-id", "dev-1").exit_code == 0


def test_expired_manifest_is_refused(kit: ModuleType, tmp_path: Path, keys: Keys, store: Path, scratch: Path) -> None:
    build = kit.make_build(tmp_path / "build", seed="old")
    long_ago = str(int(time.time()) - 10 * 86_400)
    made = kit.run("bundle", build, "--key", keys.private, "--version", "1.1.0", "-o", tmp_path / "out",
                   "--target", "raspberry-pi-4", "--expires-in", "2", "--json",
                   env={"SOURCE_DATE_EPOCH": long_ago})  # fmt: skip
    assert made.exit_code == 0, made.stderr
    _assert_refused(kit, Path(made.json()["bundles"][0]["path"]), keys, store, scratch, "expired at")


def test_downgrade_is_refused(
    kit: ModuleType, keys: Keys, bundles: dict[str, Path], store: Path, scratch: Path
) -> None:
    assert (
        kit.run("install", bundles["1.2.0"], "--into", store, "--key", keys.public, "--device-id", "d").exit_code == 0
    )
    before = kit.snapshot(store)
    verified = kit.run("verify", bundles["1.1.0"], "--key", keys.public, "--store", store)
    assert verified.exit_code == 2 and "lower than the installed version 1.2.0" in verified.stderr
    assert "--allow-downgrade" in verified.stderr  # the advice names an option verify has
    intended = kit.run("verify", bundles["1.1.0"], "--key", keys.public, "--store", store, "--allow-downgrade")
    assert intended.exit_code == 0, intended.stderr
    installed = kit.run("install", bundles["1.1.0"], "--into", store, "--key", keys.public, "--device-id", "d")
    assert installed.exit_code == 2 and "downgrade" in installed.stderr
    assert kit.snapshot(store) == before


def test_not_a_tar_gz_is_refused(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path], store: Path, scratch: Path
) -> None:
    text = tmp_path / "notes.tar.gz"
    text.write_text("just some text\n")
    _assert_refused(kit, text, keys, store, scratch, "not a tar.gz")
    plain_tar = repack(tmp_path / "plain.tar.gz", read_bundle(bundles["1.1.0"]), compress=False)
    _assert_refused(kit, plain_tar, keys, store, scratch, "not a tar.gz")
    gzipped_text = tmp_path / "text.tar.gz"
    gzipped_text.write_bytes(gzip.compress(b"not a tar archive at all" * 40, mtime=0))
    _assert_refused(kit, gzipped_text, keys, store, scratch, "not a tar archive")
    empty = tmp_path / "empty.tar.gz"
    empty.write_bytes(b"")
    _assert_refused(kit, empty, keys, store, scratch, "not a tar.gz")


@pytest.mark.parametrize("keep", [0.5, 0.9, -30, -8, -1])
def test_truncated_bundle_is_refused(
    kit: ModuleType, keep: float, tmp_path: Path, keys: Keys, bundles: dict[str, Path], store: Path, scratch: Path
) -> None:
    data = bundles["1.1.0"].read_bytes()
    cut = int(len(data) * keep) if keep > 0 else len(data) + int(keep)
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(data[:cut])
    _assert_refused(kit, truncated, keys, store, scratch, "truncated or corrupt")


def test_trailing_garbage_is_refused(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path], store: Path, scratch: Path
) -> None:
    padded = tmp_path / "padded.tar.gz"
    padded.write_bytes(bundles["1.1.0"].read_bytes() + b"MALWARE")
    _assert_refused(kit, padded, keys, store, scratch, "bytes after its gzip stream")


def test_member_that_would_escape_is_never_written(
    kit: ModuleType, tmp_path: Path, keys: Keys, bundles: dict[str, Path], store: Path
) -> None:
    target = tmp_path / "escaped"
    members = read_bundle(bundles["1.1.0"])
    attack = [*members[:2], (member(f"../../../../../../..{target}"), b"owned"), *members[2:]]
    tampered = repack(tmp_path / "escape.tar.gz", attack)
    assert kit.run("install", tampered, "--into", store, "--key", keys.public, "--force").exit_code == 2
    assert kit.run("verify", tampered, "--key", keys.public).exit_code == 2
    assert not target.exists()


def test_a_private_key_is_not_accepted_as_trust_anchor(kit: ModuleType, keys: Keys, bundles: dict[str, Path]) -> None:
    outcome = kit.run("verify", bundles["1.0.0"], "--key", keys.private)
    assert outcome.exit_code == 2 and "is a private key" in outcome.stderr


# -- memory and bytes before the signature ------------------------------------------------------------------------


def _peak_mib_refusing(bundle: Path, keys: Keys, scratch: Path, expected: str) -> float:
    """Verify ``bundle`` in this process under tracemalloc; it must be refused with ``expected``; the peak in MiB."""
    import tracemalloc

    from edgekit.errors import SecurityError
    from edgekit.release.signing import load_public_key
    from edgekit.release.verify import verify_bundle

    key = load_public_key(keys.public)
    tracemalloc.start()
    try:
        with pytest.raises(SecurityError) as refused:
            verify_bundle(bundle, key, scratch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert expected in refused.value.message, refused.value.message
    return peak / (1 << 20)


def test_a_huge_extended_header_is_refused_before_it_is_read(tmp_path: Path, keys: Keys, scratch: Path) -> None:
    """A 306 KB bundle declaring a 300 MiB PAX header drove tarfile to read it whole; now it is never read."""
    bomb = tmp_path / "pax-bomb.tar.gz"
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 300 << 20
    with gzip.open(bomb, "wb", compresslevel=1) as out:
        out.write(header.tobuf(tarfile.USTAR_FORMAT))
        zeros = bytes(1 << 20)
        for _ in range(300):
            out.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    peak = _peak_mib_refusing(bomb, keys, scratch, "extended tar header of 314572800 bytes")
    assert peak < 64, f"{peak:.1f} MiB while refusing a PAX bomb"


def test_a_flood_of_directory_entries_is_refused_at_the_second(tmp_path: Path, keys: Keys, bundles: dict[str, Path],
                                                                scratch: Path) -> None:
    members = read_bundle(bundles["1.1.0"])
    flood = [(member("raspberry-pi-4", tarfile.DIRTYPE), b"") for _ in range(50_000)]
    bundle = repack(tmp_path / "flood.tar.gz", [*members[:2], *flood, *members[2:]])
    peak = _peak_mib_refusing(bundle, keys, scratch, "(or lists it twice)")
    assert peak < 64


@pytest.mark.parametrize("tail", ["second gzip member", "zeros inside the stream", "bytes inside the stream"])
def test_nothing_after_the_archive_is_accepted(tmp_path: Path, keys: Keys, bundles: dict[str, Path], scratch: Path,
                                               tail: str) -> None:
    original = bundles["1.1.0"].read_bytes()
    tar = gzip.decompress(original)
    hostile = {
        "second gzip member": original + gzip.compress(b"#!/bin/sh\necho owned\n"),
        "zeros inside the stream": gzip.compress(tar + bytes(1 << 20)),  # more than one record of padding
        "bytes inside the stream": gzip.compress(tar + b"MALWARE"),
    }[tail]
    bundle = tmp_path / "tail.tar.gz"
    bundle.write_bytes(hostile)
    expected = "after its gzip stream" if tail == "second gzip member" else "unexpected data after its last file"
    _peak_mib_refusing(bundle, keys, scratch, expected)
