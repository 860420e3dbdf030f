"""edgekit bundle: reproducible bytes, per-target and all-in-one bundles, and refusals."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

from edgekit.artifact import sha256_file
from edgekit.release.store import current_dir

Keys = Any


def _bundle(
    kit: ModuleType, build: Path, keys: Keys, out: Path, *extra: object, env: dict[str, str | None] | None = None
) -> Any:
    return kit.run("bundle", build, "--key", keys.private, "--version", "1.0.0", "-o", out, "--json", *extra, env=env)


def _manifest(bundle: Path) -> dict[str, Any]:
    with tarfile.open(bundle, "r:gz") as tar:
        return json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]


def test_two_runs_give_identical_bytes(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build")
    first = _bundle(kit, build, keys, tmp_path / "a", "--all-in-one")
    second = _bundle(kit, build, keys, tmp_path / "b", "--all-in-one")
    assert first.exit_code == 0 and second.exit_code == 0, first.stderr + second.stderr
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [
        "digits-cnn-1.0.0-iphone-ios17.tar.gz",
        "digits-cnn-1.0.0-raspberry-pi-4.tar.gz",
        "digits-cnn-1.0.0.tar.gz",
    ]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert [b["sha256"] for b in first.json()["bundles"]] == [b["sha256"] for b in second.json()["bundles"]]
    # A different issue time is a different release: the bytes change.
    third = _bundle(kit, build, keys, tmp_path / "c", env={"SOURCE_DATE_EPOCH": str(kit.EPOCH + 1)})
    assert (tmp_path / "c" / names[1]).read_bytes() != (tmp_path / "a" / names[1]).read_bytes()
    assert third.exit_code == 0


def test_a_signed_release_is_not_replaced_by_other_bytes(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build")
    out = tmp_path / "out"
    assert _bundle(kit, build, keys, out, "--all-in-one").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _bundle(kit, build, keys, out, "--all-in-one").exit_code == 0, "the same bytes again are fine"
    later = {"SOURCE_DATE_EPOCH": str(kit.EPOCH + 60)}  # another issue time: other bytes, same version
    refused = _bundle(kit, build, keys, out, "--all-in-one", env=later)
    assert refused.exit_code == 2 and "immutable" in refused.stderr and "--force" in refused.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "nothing replaced, nothing left behind"
    forced = _bundle(kit, build, keys, out, "--all-in-one", "--force", env=later)
    assert forced.exit_code == 0
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after.keys() == before.keys() and all(after[n] != before[n] for n in before)


def test_archive_is_normalised(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build")
    bundle = Path(_bundle(kit, build, keys, tmp_path / "out", "--target", "iphone-ios17").json()["bundles"][0]["path"])
    raw = bundle.read_bytes()
    assert raw[:3] == b"\x1f\x8b\x08"
    assert raw[3] & 0x08 == 0, "no file name in the gzip header"
    assert raw[4:8] == b"\0\0\0\0", "gzip header mtime is 0"
    with tarfile.open(bundle, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:2] == ["manifest.json", "manifest.sig"]
    assert names[2:] == sorted(names[2:])
    assert "iphone-ios17/digits-cnn.fp16.mlpackage/Data/com.apple.CoreML/weights/weight.bin" in names
    for m in members:
        assert m.isfile() and (m.uid, m.gid, m.uname, m.gname, m.mode, m.mtime) == (0, 0, "", "", 0o644, kit.EPOCH)


def test_release_manifest_fields(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build")
    made = _bundle(kit, build, keys, tmp_path / "out", "--channel", "beta", "--rollout", "20", "--rollback-to", "0.9.1",
                   "--min-app-version", "2.3", "--expires-in", "30", "--all-in-one")  # fmt: skip
    assert made.exit_code == 0, made.stderr
    pi, phone, everything = (Path(b["path"]) for b in made.json()["bundles"])
    release = _manifest(pi)["release"]
    assert release == {
        "version": "1.0.0",
        "channel": "beta",
        "rollout_percentage": 20,
        "rollback_to": "0.9.1",
        "min_app_version": "2.3",
        "issued_at": _manifest(pi)["release"]["issued_at"],
        "expires_at": release["expires_at"],
        "target": "raspberry-pi-4",
    }
    from edgekit.release.timestamps import parse_utc

    assert parse_utc(release["issued_at"]) == kit.EPOCH and parse_utc(release["expires_at"]) == kit.EPOCH + 30 * 86_400
    pi_manifest = _manifest(pi)
    assert {a["target"] for a in pi_manifest["artifacts"]} == {"raspberry-pi-4"}
    assert [t["name"] for t in pi_manifest["targets"]] == ["raspberry-pi-4"]
    assert set(pi_manifest["files"]) == {
        "raspberry-pi-4/digits-cnn.int8.onnx",
        "raspberry-pi-4/digits-cnn.int8.onnx.report.json",
        "raspberry-pi-4/digits-cnn.int8.tflite",
        "raspberry-pi-4/digits-cnn.int8.tflite.report.json",
    }
    assert _manifest(phone)["artifacts"][0]["min_runtime_version"] == "1.17"
    assert _manifest(everything)["release"]["target"] is None
    assert len(_manifest(everything)["artifacts"]) == 3


def test_mlpackage_folder_survives_bundle_and_install(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build")
    bundle = Path(_bundle(kit, build, keys, tmp_path / "out", "--target", "iphone-ios17").json()["bundles"][0]["path"])
    verified = kit.run("verify", bundle, "--key", keys.public, "--json")
    assert verified.exit_code == 0 and verified.json()["ok"] is True
    store = tmp_path / "store"
    assert kit.run("install", bundle, "--into", store, "--key", keys.public, "-t", "iphone-ios17").exit_code == 0
    package = "iphone-ios17/digits-cnn.fp16.mlpackage"
    assert sha256_file(current_dir(store) / package) == sha256_file(build / package)


def test_failed_artifacts_need_allow_failed(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build", failed_target="iphone-ios17")
    refused = _bundle(kit, build, keys, tmp_path / "out")
    assert refused.exit_code == 2 and "iphone-ios17" in refused.stderr and "--allow-failed" in refused.stderr
    assert not (tmp_path / "out").exists()
    only_good = _bundle(kit, build, keys, tmp_path / "out", "-t", "raspberry-pi-4")  # -t as in build and bench
    assert only_good.exit_code == 0
    shipped = _bundle(kit, build, keys, tmp_path / "out2", "--allow-failed")
    assert shipped.exit_code == 0
    phone = next(Path(b["path"]) for b in shipped.json()["bundles"] if b["target"] == "iphone-ios17")
    assert _manifest(phone)["artifacts"][0]["passed"] is False, "the signed manifest says it failed"


def test_artifact_changed_after_build_is_refused(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build")
    (build / "raspberry-pi-4" / "digits-cnn.int8.tflite").write_bytes(b"swapped after validation")
    refused = _bundle(kit, build, keys, tmp_path / "out")
    assert refused.exit_code == 2 and "changed after the build" in refused.stderr
    assert not (tmp_path / "out").exists()


def test_symlinked_artifact_is_refused(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build")
    onnx = build / "raspberry-pi-4" / "digits-cnn.int8.onnx"
    real = tmp_path / "elsewhere.onnx"
    onnx.rename(real)
    onnx.symlink_to(real)
    refused = _bundle(kit, build, keys, tmp_path / "out")
    assert refused.exit_code == 2 and "symbolic link" in refused.stderr


def test_bad_options_and_bad_build_are_refused(kit: ModuleType, tmp_path: Path, keys: Keys) -> None:
    build = kit.make_build(tmp_path / "build")
    out = tmp_path / "out"
    cases = [
        (["--target", "esp32-s3"], "no artifacts for target(s) esp32-s3"),
        (["--rollback-to", "1.0.0"], "is not lower than --version"),
        (["--min-app-version", "two"], "is not a version"),
        (["--rollout", "101"], "101"),
        (["--expires-in", "0"], "0"),
    ]
    for extra, message in cases:
        outcome = _bundle(kit, build, keys, out, *extra)
        assert outcome.exit_code == 2 and message in outcome.stderr, (extra, outcome)
    bad_version = kit.run("bundle", build, "--key", keys.private, "--version", "1.0", "-o", out)
    assert bad_version.exit_code == 2 and "not a semantic version" in bad_version.stderr
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["artifacts"][0]["sizebytes"] = 1  # a typo'd key
    (build / "manifest.json").write_text(json.dumps(manifest))
    typo = _bundle(kit, build, keys, out)
    assert typo.exit_code == 2 and "unknown key 'sizebytes'" in typo.stderr
    assert not out.exists()
    missing = _bundle(kit, tmp_path, keys, out)
    assert missing.exit_code == 2 and "has no manifest.json" in missing.stderr


def test_encrypted_key_needs_its_passphrase(kit: ModuleType, tmp_path: Path) -> None:
    made = kit.run(
        "keygen", "-o", tmp_path / "keys", "--passphrase-env", "KEY_PASS", "--json", env={"KEY_PASS": "correct horse"}
    )
    assert made.exit_code == 0 and made.json()["encrypted"] is True
    key = tmp_path / "keys" / "edgekit.key"
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    build = kit.make_build(tmp_path / "build")
    base = ["bundle", build, "--key", key, "--version", "1.0.0", "-o", tmp_path / "out", "--target", "raspberry-pi-4"]
    no_pass = kit.run(*base)
    assert no_pass.exit_code == 2 and "is encrypted" in no_pass.stderr
    wrong = kit.run(*base, "--passphrase-env", "KEY_PASS", env={"KEY_PASS": "wrong"})
    assert wrong.exit_code == 2 and "cannot decrypt" in wrong.stderr
    unset = kit.run(*base, "--passphrase-env", "KEY_PASS")
    assert unset.exit_code == 2 and "KEY_PASS is not set" in unset.stderr
    right = kit.run(*base, "--passphrase-env", "KEY_PASS", env={"KEY_PASS": "correct horse"})
    assert right.exit_code == 0, right.stderr
    bundle = tmp_path / "out" / "digits-cnn-1.0.0-raspberry-pi-4.tar.gz"
    assert kit.run("verify", bundle, "--key", tmp_path / "keys" / "edgekit.pub").exit_code == 0
