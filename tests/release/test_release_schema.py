"""The shipped manifest schema, edgekit's validator for it, and version ordering."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgekit.errors import InputError, InternalError
from edgekit.release import schema as schema_module
from edgekit.release.manifest import read_manifest
from edgekit.release.schema import manifest_schema, schema_errors, validate_manifest
from edgekit.release.version import parse_loose, parse_semver

import jsonschema


@pytest.fixture()
def build_manifest(kit: ModuleType, tmp_path: Path) -> dict[str, Any]:
    return read_manifest(kit.make_build(tmp_path / "build") / "manifest.json")


@pytest.fixture()
def release_manifest(kit: ModuleType, tmp_path: Path, keys: Any) -> dict[str, Any]:
    import tarfile

    made = kit.run("bundle", kit.make_build(tmp_path / "b"), "--key", keys.private, "--version", "1.0.0",
                   "-o", tmp_path / "out", "--all-in-one", "--json")  # fmt: skip
    with tarfile.open(made.json()["bundles"][-1]["path"], "r:gz") as tar:
        return json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]


def test_schema_is_valid_json_schema_and_ships_in_the_package() -> None:
    schema = manifest_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert Path(schema_module.__file__).with_name("manifest.schema.json").is_file()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return edit


_DELETE = object()
MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "unchanged": lambda doc: None,
    "schema_version 2": _set("schema_version", 2),
    "schema_version true": _set("schema_version", True),
    "no model": _set("model", _DELETE),
    "model name with slash": _set("model.name", "a/b"),
    "model version not semver": _set("model.version", "1.0"),
    "model version v-prefixed": _set("model.version", "v1.0.0"),
    "prerelease version": _set("model.version", "1.0.0-rc.1+build.5"),
    "short sha": _set("model.source_sha256", "abc"),
    "uppercase sha": _set("model.source_sha256", "AB" * 32),
    "created_at no zone": _set("created_at", "2026-11-26T08:00:00"),
    "unknown top-level key": _set("extra", 1),
    "size as float": _set("artifacts.0.size_bytes", 12.5),
    "size as integral float": _set("artifacts.0.size_bytes", 12.0),
    "size as bool": _set("artifacts.0.size_bytes", True),
    "negative size": _set("artifacts.0.size_bytes", -1),
    "absolute path": _set("artifacts.0.path", "/etc/passwd"),
    "dotdot path": _set("artifacts.0.path", "a/../b"),
    "hidden path": _set("artifacts.0.path", "a/.hidden"),
    "passed as string": _set("artifacts.0.passed", "yes"),
    "open metrics": _set("artifacts.0.metrics", {"anything": [1, 2], "new_metric": 0.5}),
    "metrics not object": _set("artifacts.0.metrics", [1]),
    "null min runtime": _set("artifacts.0.min_runtime_version", None),
    "platform min runtime": _set("artifacts.0.min_runtime_version", "iOS 17"),
    "numeric min runtime": _set("artifacts.0.min_runtime_version", 1.17),
    "empty min runtime": _set("artifacts.0.min_runtime_version", ""),
    "model inputs": _set("model.inputs", [{"name": "x", "shape": ["batch", 1, 28, 28], "dtype": "float32"}]),
    "model inputs bad": _set("model.inputs", [{"name": "x"}]),
    "input range": _set("model.inputs", [{"name": "x", "shape": [None, 4], "dtype": "float32", "range": [-1, 2.5]}]),
    "input range of one": _set("model.inputs", [{"name": "x", "shape": [None], "dtype": "float32", "range": [0.0]}]),
    "input range of three": _set("model.inputs", [{"name": "x", "shape": [None], "dtype": "int64", "range": [0, 1, 2]}]),
    "target errors": _set("targets.0.errors", [{"artifact": "onnx int8", "message": "boom", "exit_code": 3}]),
    "artifact weights detail": _set("artifacts.0.weights", {"by_precision": {"int8": 10}}),
    "check status bad": _set("artifacts.0.checks.0.status", "ok"),
    "check limit null": _set("artifacts.0.checks.0.limit", None),
    "target status bad": _set("targets.0.status", "done"),
    "target unknown key": _set("targets.0.colour", "red"),
    "unknown artifact key": _set("artifacts.0.sizebytes", 1),
    "no data is fine": _set("data", _DELETE),
    "versions value int": _set("toolkit.versions.torch", 2),
}
RELEASE_MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "release unchanged": lambda doc: None,
    "rollout 101": _set("release.rollout_percentage", 101),
    "rollout float": _set("release.rollout_percentage", 50.5),
    "rollback_to null": _set("release.rollback_to", None),
    "rollback_to bad": _set("release.rollback_to", "previous"),
    "channel upper": _set("release.channel", "Stable"),
    "no expiry": _set("release.expires_at", _DELETE),
    "files empty": _set("files", {}),
    "file key absolute": lambda doc: doc["files"].update({"/etc/x": {"sha256": "0" * 64, "size_bytes": 1}}),
    "file entry extra key": lambda doc: next(iter(doc["files"].values())).update({"mode": 420}),
}


VALID = {
    "unchanged", "prerelease version", "size as integral float", "open metrics", "null min runtime",
    "platform min runtime", "model inputs", "input range", "target errors", "artifact weights detail", "check limit null",
    "no data is fine", "release unchanged", "rollback_to null",
}  # fmt: skip


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_validator_agrees_with_jsonschema_on_build_manifests(name: str, build_manifest: dict[str, Any]) -> None:
    _compare(name, build_manifest, MUTATIONS[name])


@pytest.mark.parametrize("name", list(RELEASE_MUTATIONS))
def test_validator_agrees_with_jsonschema_on_release_manifests(name: str, release_manifest: dict[str, Any]) -> None:
    _compare(name, release_manifest, RELEASE_MUTATIONS[name])


def _compare(name: str, original: dict[str, Any], mutate: Callable[[dict[str, Any]], None]) -> None:
    document = copy.deepcopy(original)
    mutate(document)
    reference = jsonschema.Draft202012Validator(manifest_schema())
    ours = not schema_errors(document)
    assert ours == reference.is_valid(document), schema_errors(document)
    assert ours == (name in VALID), schema_errors(document)


def test_unchanged_manifests_are_valid(build_manifest: dict[str, Any], release_manifest: dict[str, Any]) -> None:
    assert schema_errors(build_manifest) == [] and schema_errors(release_manifest) == []
    with pytest.raises(InputError, match="missing 'release'"):
        validate_manifest(build_manifest, release=True)


def test_errors_name_the_place_and_the_problem(build_manifest: dict[str, Any]) -> None:
    build_manifest["artifacts"][0]["size_bytes"] = "big"
    build_manifest["targets"][0]["status"] = "done"
    with pytest.raises(InputError) as caught:
        validate_manifest(build_manifest, what="build/manifest.json")
    message = caught.value.message
    assert "$.artifacts[0].size_bytes: expected integer, got string" in message
    assert '$.targets[0].status: "done" is not one of' in message
    assert message.startswith("build/manifest.json does not match")


def test_trailing_newline_is_not_a_version(build_manifest: dict[str, Any]) -> None:
    # Python's re "$" matches before a final newline; JSON Schema's (ECMA-262) does not.
    build_manifest["model"]["version"] = "1.0.0\n"
    assert schema_errors(build_manifest)
    with pytest.raises(InputError):
        parse_semver("1.0.0\n")


def test_a_schema_keyword_the_validator_does_not_know_is_an_error() -> None:
    with pytest.raises(InternalError, match="unsupported keyword"):
        schema_module._check_keywords({"properties": {"x": {"oneOf": []}}}, "#")


def test_semver_precedence_follows_the_spec() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "1.10.0", "2.0.0"]  # fmt: skip
    parsed = [parse_semver(v) for v in ordered]
    assert parsed == sorted(reversed(parsed))
    assert all(a < b for a, b in itertools.pairwise(parsed))
    assert parse_semver("1.0.0+build.1") == parse_semver("1.0.0+build.2")
    assert parse_loose("1.17") == parse_loose("1.17.0") < parse_loose("1.17.1")
    for bad in ("1.0", "01.0.0", "1.0.0-", "v1.0.0", "1.0.0.0", "١.0.0"):
        with pytest.raises(InputError):
            parse_semver(bad)
