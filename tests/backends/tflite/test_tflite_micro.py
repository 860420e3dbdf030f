"""TFLite Micro: op-set check, arena by bisection, and the graph-computed fallback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgekit.backends.tflite import micro
from edgekit.backends.tflite.inspect import parse
from edgekit.errors import UnsupportedModelError

# Tests run with --import-mode=importlib, which does not put this folder on sys.path;
# the shared tiny models live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
from tflite_testing_models import built, by_variant  # noqa: E402

pytestmark = pytest.mark.slow


def test_op_set_check_names_what_is_missing() -> None:
    assert micro.unsupported_ops(["CONV_2D", "GELU", "FULLY_CONNECTED", "GELU", "CUSTOM:Foo"]) == ["CUSTOM:Foo", "GELU"]
    assert micro.unsupported_ops(["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "RESHAPE", "QUANTIZE"]) == []


def test_arena_is_measured_and_close_to_the_graph_estimate() -> None:
    artifact = by_variant(built("cnn", "int8", io="int8", kind="microcontroller"))["pt2e-static"]
    data = artifact.path.read_bytes()
    facts = micro.check(data, "test-mcu")
    assert facts["flash_bytes"] == len(data)
    estimate = micro.computed_arena_bytes(parse(data))
    assert estimate > 0
    if micro.tflite_micro_available():
        assert facts["method"] == "measured with tflite-micro by bisection"
        assert 0.5 * facts["arena_bytes"] <= estimate <= 2 * facts["arena_bytes"]
        # Bisection found the minimum: 16 bytes (one alignment step) less does not allocate.
        from tflite_micro.python.tflite_micro import runtime as tflm

        tflm.Interpreter.from_bytes(data, arena_size=facts["arena_bytes"])
        with pytest.raises(RuntimeError):
            tflm.Interpreter.from_bytes(data, arena_size=facts["arena_bytes"] - 32)
    else:
        assert facts["method"] == "computed from the graph" and facts["arena_bytes"] == estimate


def test_float_model_with_gelu_is_refused_for_microcontrollers() -> None:
    # GELU appears in the float conversion of GeluMLP; check() is format-level, no int8 needed.
    (artifact,) = built("mlp", "fp32")
    ok = micro.check(artifact.path.read_bytes(), "test-mcu")  # tanh/relu MLP: all ops supported
    assert ok["arena_bytes"] > 0
    gelu = built("gelu", "fp32")[0].path.read_bytes()
    with pytest.raises(UnsupportedModelError, match="GELU.*TFLite Micro.*test-mcu"):
        micro.check(gelu, "test-mcu")
