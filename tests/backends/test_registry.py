"""The backend registry: one entry per format carries every format-specific fact, options are strict."""

from __future__ import annotations

import platform

import pytest

from edgekit import backends
from edgekit.config import load_profile, parse_profile
from edgekit.errors import ConfigError


def _profile_with(artifact: dict) -> dict:
    data = load_profile("raspberry-pi-4").model_dump(mode="json", exclude={"source"}, by_alias=True)
    data["artifacts"] = [artifact]
    return data


def test_every_entry_names_its_suffix_runtime_and_minimum_version() -> None:
    for name, entry in backends.REGISTRY.items():
        assert entry.format == name and entry.suffixes and entry.runtime and entry.min_runtime and entry.delegate
        assert set(entry.precisions) <= {"fp32", "fp16", "int8", "dynamic-int8", "int4"}


def test_tool_packages_gather_every_backends_tools_once() -> None:
    tools = backends.tool_packages()
    assert len(tools) == len(set(tools)) and tools[-1] == "numpy"
    for entry in backends.REGISTRY.values():
        assert set(entry.tool_packages) <= set(tools)


def test_an_unknown_format_in_a_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse_profile(_profile_with({"format": "tensorrt", "precision": "int8"}), "p.toml")
    assert "unknown format 'tensorrt'" in err.value.problem
    for name in backends.formats():
        assert name in err.value.problem


@pytest.mark.parametrize(("artifact", "problem", "fix"), [
    ({"format": "onnx", "precision": "int8", "options": {"per_channel": True}},
     "unknown ONNX option(s) per_channel", "take no options"),
    ({"format": "tflite", "precision": "int8", "options": {"integer_onyl": True}},
     "unknown TFLite option(s) integer_onyl", "Known options: integer_only"),
    ({"format": "tflite", "precision": "int8", "options": {"integer_only": 1}},
     "integer_only = 1 is invalid", "Expected true or false"),
    ({"format": "tflite", "precision": "fp16", "options": {"integer_only": True}},
     "integer_only applies to int8 requests, not fp16", "Remove the option"),
])
def test_options_are_checked_when_the_profile_loads(artifact: dict, problem: str, fix: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_profile(_profile_with(artifact), "p.toml")
    assert problem in err.value.problem and fix in err.value.problem
    assert "Value error" not in err.value.problem


def test_valid_options_parse_into_the_formats_typed_model() -> None:
    options = backends.parse_options("tflite", {"integer_only": True}, "int8", "here")
    assert options.integer_only is True
    assert backends.parse_options("coreml", {"palettize": 4}, "int4", "here").palettize == 4
    assert backends.parse_options("onnx", {}, "int8", "here") == backends.NoOptions()


def test_bench_knows_which_formats_this_machine_cannot_run() -> None:
    reason = backends.bench_unavailable("coreml")
    assert (reason is None) == (platform.system() == "Darwin")
    assert backends.bench_unavailable("onnx") is None and backends.bench_unavailable("tflite") is None
