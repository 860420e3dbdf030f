"""The manifest's JSON Schema and the validator every manifest read goes through.

The schema ships as ``edgekit/release/manifest.schema.json`` (JSON Schema
draft 2020-12), so other tools can validate manifests too. edgekit checks it
with the small validator below rather than the ``jsonschema`` package: verify
runs on devices with only the ``runtime`` extra, and the code that decides
whether an update is trusted should pull in as few dependencies as possible.
The validator implements exactly the keywords the schema uses and refuses a
schema that uses any other, so the two cannot silently drift apart; a test
compares its verdicts with ``jsonschema`` on valid and broken manifests.

One deliberate difference from Python's ``re``-based validators: a pattern's
``$`` does not match before a trailing newline (ECMA-262 semantics, which JSON
Schema specifies), so ``"1.0.0\\n"`` is not a version.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from edgekit.errors import InputError, InternalError

SCHEMA_FILE = "manifest.schema.json"

# Annotations (ignored when validating) and the assertions implemented below.
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
_ASSERTIONS = {
    "$ref", "type", "const", "enum", "anyOf",
    "properties", "required", "additionalProperties", "propertyNames", "minProperties", "maxProperties",
    "items", "minItems", "maxItems",
    "pattern", "minLength", "maxLength",
    "minimum", "maximum",
}  # fmt: skip
_MAX_ERRORS = 20


@cache
def manifest_schema() -> dict[str, Any]:
    """The shipped manifest schema, checked to use only keywords this validator knows."""
    text = resources.files("edgekit.release").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema = json.loads(text)
    _check_keywords(schema, "#")
    return schema


def _check_keywords(node: Any, where: str) -> None:
    if not isinstance(node, dict):
        return
    unknown = set(node) - _ANNOTATIONS - _ASSERTIONS
    if unknown:
        raise InternalError(f"manifest schema uses unsupported keyword(s) {sorted(unknown)} at {where}")
    for key in ("properties", "$defs"):
        for name, sub in node.get(key, {}).items():
            _check_keywords(sub, f"{where}/{key}/{name}")
    for key in ("additionalProperties", "propertyNames", "items"):
        if isinstance(node.get(key), dict):
            _check_keywords(node[key], f"{where}/{key}")
    for index, sub in enumerate(node.get("anyOf", [])):
        _check_keywords(sub, f"{where}/anyOf/{index}")


def schema_errors(document: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Every place ``document`` breaks the schema, as ``"<json path>: <problem>"`` (empty if valid)."""
    root = schema if schema is not None else manifest_schema()
    errors: list[str] = []
    _validate(document, root, root, "$", errors)
    return errors


def validate_manifest(document: Any, *, what: str = "manifest", release: bool = False) -> dict[str, Any]:
    """Return ``document`` if it matches the schema, else raise InputError listing the problems.

    With ``release=True`` the document must also be a release manifest (carry
    the ``release`` and ``files`` objects a bundle adds).
    """
    errors = schema_errors(document)
    if not errors and release:
        errors = [
            f"$: missing '{key}' (a release manifest needs it)" for key in ("release", "files") if key not in document
        ]
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise InputError(
            f"{what} does not match the edgekit manifest schema: {shown}",
            "Rebuild it with this edgekit version, or check the file was not edited by hand",
        )
    return document


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, expected: str) -> bool:
    actual = _json_type(value)
    if expected == "number":
        return actual in ("integer", "number")
    if expected == "integer":
        # JSON Schema counts 1.0 as an integer; booleans are never numbers.
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == expected


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1, but 1 equals 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise InternalError(f"manifest schema uses a non-local $ref {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _matches(pattern: str, text: str) -> bool:
    if _compiled(pattern).search(text) is None:
        return False
    # ECMA-262 "$" (what JSON Schema specifies) matches only at the very end.
    return not (pattern.endswith("$") and text.endswith("\n"))


def _validate(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str, errors: list[str]) -> None:
    if len(errors) >= _MAX_ERRORS:
        return
    if "$ref" in schema:
        _validate(value, _resolve(schema["$ref"], root), root, path, errors)
    if "anyOf" in schema:
        if not any(not _sub_errors(value, option, root, path) for option in schema["anyOf"]):
            errors.append(f"{path}: {_short(value)} matches none of the allowed forms")
            return
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in allowed):
            errors.append(f"{path}: expected {' or '.join(allowed)}, got {_json_type(value)}")
            return
    if "const" in schema and not _equal(value, schema["const"]):
        errors.append(f"{path}: must be {json.dumps(schema['const'])}, got {_short(value)}")
    if "enum" in schema and not any(_equal(value, option) for option in schema["enum"]):
        errors.append(f"{path}: {_short(value)} is not one of {', '.join(json.dumps(o) for o in schema['enum'])}")
    if isinstance(value, str):
        _validate_string(value, schema, path, errors)
    elif _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                _validate(item, schema["items"], root, f"{path}[{index}]", errors)
    elif isinstance(value, dict):
        _validate_object(value, schema, root, path, errors)


def _validate_string(value: str, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if "pattern" in schema and not _matches(schema["pattern"], value):
        errors.append(f"{path}: {_short(value)} does not match the pattern {schema['pattern']}")


def _validate_object(
    value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], path: str, errors: list[str]
) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in value:
            errors.append(f"{path}: missing required key {key!r}")
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(f"{path}: fewer than {schema['minProperties']} entries")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(f"{path}: more than {schema['maxProperties']} entries")
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        where = f"{path}.{key}"
        if "propertyNames" in schema:
            for problem in _sub_errors(key, schema["propertyNames"], root, where):
                errors.append(f"{where}: key name {problem.split(': ', 1)[-1]}")
        if key in properties:
            _validate(item, properties[key], root, where, errors)
        elif extra is False:
            errors.append(f"{path}: unknown key {key!r}")
        elif isinstance(extra, dict):
            _validate(item, extra, root, where, errors)


def _sub_errors(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    found: list[str] = []
    _validate(value, schema, root, path, found)
    return found


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 60 else text[:57] + "..."
