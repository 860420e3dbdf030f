"""TFLite build: every precision converts, runs in LiteRT and matches torch.

Real litert-torch, ai-edge-quantizer and LiteRT on tiny models; builds are
cached per session in ``tflite_testing_models``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.errors import ConfigError, DataError, UnsupportedModelError

# Tests run with --import-mode=importlib, which does not put this folder on sys.path;
# the shared tiny models live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
from tflite_testing_models import agreement, built, by_variant, case, job, run  # noqa: E402

pytestmark = pytest.mark.slow


def _check_common(artifacts, precision: str) -> None:
    assert artifacts, "build returned no candidates"
    for a in artifacts:
        assert a.path.is_file() and a.path.suffix == ".tflite"
        assert a.path.name == f"{a.path.name.split('.')[0]}.{a.variant}.tflite"
        assert a.format == "tflite" and a.precision == precision
        census = a.details["weights"]
        assert set(census) == {"by_precision", "by_op", "parameters"}
        assert census["parameters"] == sum(census["by_precision"].values())
        assert "float_layers" in a.details


def test_fp32_matches_torch_for_any_batch() -> None:
    (artifact,) = built("cnn", "fp32")
    _check_common((artifact,), "fp32")
    c = case("cnn")
    (got,) = run(artifact, c.test)  # batch 200 through a batch-1 model
    (want,) = c.reference()
    assert got.shape == want.shape == (200, 4)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert set(artifact.details["weights"]["by_precision"]) == {"fp32"}
    assert artifact.details["io"] == "float"
    assert "io_quantization" not in artifact.details
    assert artifact.details["float_agreement"] == "fp32"  # validation holds it to the FP32 model
    # The converter's own figure, read back from the flatbuffer's metadata (the manifest records it).
    from edgekit.backends.tflite.inspect import inspect as tflite_inspect

    recorded = tflite_inspect(artifact.path)["details"]["min_runtime_version"]
    assert recorded and artifact.details["min_runtime_version"] == recorded and recorded.count(".") == 2


def test_fp16_weights_are_float16() -> None:
    (artifact,) = built("cnn", "fp16")
    _check_common((artifact,), "fp16")
    c = case("cnn")
    (got,) = run(artifact, c.test)
    (want,) = c.reference()
    np.testing.assert_allclose(got, want, atol=2e-2)
    census = artifact.details["weights"]["by_precision"]
    assert census.get("fp16", 0) > 10 * census.get("fp32", 0)  # only the biases stay fp32
    assert "float_agreement" not in artifact.details  # FP16 is judged by its quality bar


def test_int8_returns_static_dynamic_range_and_weight_only_with_float_io() -> None:
    artifacts = built("cnn", "int8")
    _check_common(artifacts, "int8")
    variants = by_variant(artifacts)
    assert set(variants) == {"pt2e-static", "aeq-static", "aeq-dynamic-wi8", "aeq-weight-only-wi8"}, \
        {a.variant: a.details.get("dropped") for a in artifacts}
    c = case("cnn")
    (want,) = c.reference()
    weight_only = variants["aeq-weight-only-wi8"]
    (got,) = run(weight_only, c.test)
    assert agreement(got, want) >= 0.99 and weight_only.details["io"] == "float"
    assert weight_only.details["weights"]["by_op"]["CONV_2D"]["int8"] == 1152
    assert weight_only.config["compute"].startswith("float32")
    for artifact in (variants["pt2e-static"], variants["aeq-static"]):
        (got,) = run(artifact, c.test)
        assert artifact.details["io"] == "float"  # PT2E's int8 I/O is wrapped back to float
        assert agreement(got, want) >= 0.95, artifact.variant
        error = np.abs(got - want)
        assert error.mean() < 0.02 * np.abs(want).mean(), artifact.variant  # both measured near 0.4%
        assert error.max() < 0.1 * np.abs(want).max(), artifact.variant
        census = artifact.details["weights"]
        assert census["by_precision"].get("int8", 0) > 0
        assert "fp32" not in census["by_precision"]
        assert census["by_op"]["CONV_2D"] == {"int8": 1152, "int32": 16}
        assert artifact.details["float_layers"] == []
        assert artifact.config["calibration_samples"] == 128
    assert variants["aeq-static"].config["io_rule"] == "NO_QUANTIZE on INPUT and OUTPUT"
    dynamic = variants["aeq-dynamic-wi8"]
    (got,) = run(dynamic, c.test)
    assert agreement(got, want) >= 0.97 and dynamic.details["io"] == "float"
    assert dynamic.details["weights"]["by_op"]["CONV_2D"]["int8"] == 1152
    assert dynamic.config["recipe"] == "dynamic_wi8_afp32" and dynamic.config["compute"].startswith("int8 x int8")
    assert variants["pt2e-static"].config["float_interface"]["tensors"] == ["image", "logits"]


def test_int8_full_integer_io_records_scale_and_zero_point() -> None:
    artifacts = built("cnn", "int8", io="int8", kind="microcontroller")
    _check_common(artifacts, "int8")
    c = case("cnn")
    (want,) = c.reference()
    for artifact in artifacts:
        details = artifact.details
        assert details["io"] == "int8"
        assert [d["dtype"] for d in details["interface"]["inputs"] + details["interface"]["outputs"]] == ["int8", "int8"]
        q_in = details["io_quantization"]["inputs"]["image"]
        q_out = details["io_quantization"]["outputs"]["logits"]
        for q in (q_in, q_out):
            assert q["dtype"] == "int8" and q["scale"] > 0 and -128 <= q["zero_point"] <= 127
        micro = details["micro"]
        assert micro["arena_bytes"] > 0 and micro["flash_bytes"] == artifact.size_bytes
        assert micro["method"] in ("measured with tflite-micro by bisection", "computed from the graph")
        (got,) = run(artifact, c.test)  # the session quantizes the float feed and dequantizes the output
        assert agreement(got, want) >= 0.95


def test_dynamic_int8_quantizes_weights_keeps_float_activations() -> None:
    artifacts = built("cnn", "dynamic-int8")
    _check_common(artifacts, "dynamic-int8")
    c = case("cnn")
    (want,) = c.reference()
    for artifact in artifacts:
        (got,) = run(artifact, c.test)
        assert agreement(got, want) >= 0.97
        assert artifact.details["weights"]["by_precision"].get("int8", 0) >= 1152 + 1024
        assert artifact.details["io"] == "float"


def test_int4_reports_the_depthwise_layer_left_float() -> None:
    artifacts = built("cnn", "int4")
    _check_common(artifacts, "int4")
    c = case("cnn")
    (want,) = c.reference()
    for artifact in artifacts:
        census = artifact.details["weights"]
        assert census["by_precision"]["int4"] >= 1152 + 1024
        # litert-torch lowers the 1-input-channel conv to DEPTHWISE_CONV_2D, which the int4 recipes skip
        floats = artifact.details["float_layers"]
        assert [layer["op"] for layer in floats] == ["DEPTHWISE_CONV_2D"]
        assert floats[0]["dtype"] == "fp32" and floats[0]["elements"] == 72
        assert census["by_op"]["DEPTHWISE_CONV_2D"].get("fp32", 0) >= 72
        (got,) = run(artifact, c.test)
        assert agreement(got, want) >= 0.9


def test_mlp_fp32_and_int8() -> None:
    c = case("mlp")
    (want,) = c.reference()
    (fp32,) = built("mlp", "fp32")
    np.testing.assert_allclose(run(fp32, c.test)[0], want, atol=1e-4)
    for artifact in built("mlp", "int8"):
        (got,) = run(artifact, c.test)
        assert np.max(np.abs(got - want)) < 0.25, artifact.variant
        assert agreement(got, want) >= 0.85, artifact.variant


def test_two_int64_inputs_two_outputs_keep_their_names_and_order() -> None:
    c = case("two")
    want = c.reference()
    (fp32,) = built("two", "fp32")
    iface = fp32.details["interface"]
    assert [d["name"] for d in iface["inputs"]] == ["input_ids", "attention_mask"]
    assert [d["dtype"] for d in iface["inputs"]] == ["int32", "int32"]  # litert-torch downcasts int64 I/O
    assert [d["name"] for d in iface["outputs"]] == ["logits", "pooled"]
    assert "io_name_mapping" not in fp32.details
    got = run(fp32, c.test)  # int64 feeds are cast by the session
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4)
    int8 = built("two", "int8")
    assert int8, "no int8 candidate for the two-input model"
    for artifact in int8:
        got = run(artifact, c.test)
        assert [g.shape for g in got] == [w.shape for w in want]
        assert np.max(np.abs(got[1] - want[1])) < 0.1, artifact.variant


def test_one_model_exported_under_other_output_names_keeps_each_jobs_names() -> None:
    """The float export is cached per process (several requests of one model share it); a second job of the
    same weights naming its output otherwise must get its own signature, not the first job's file.

    Seen in a long-lived process: a test named the tiny CNN's output "output", a later build of the same
    weights asked for "logits" and shipped "output" (docs/reproducibility.md)."""
    from edgekit.backends.tflite.build import build

    first = job("mlp", "fp32")
    second = dataclasses.replace(job("mlp", "fp32"), output_names=("probabilities",))
    names = []
    for one in (first, second):
        (artifact,) = build(one)
        names.append([o["name"] for o in artifact.details["interface"]["outputs"]])
    assert names == [["scores"], ["probabilities"]]


def test_op_litert_cannot_lower_names_op_module_and_target() -> None:
    from edgekit.backends.tflite.build import build

    with pytest.raises(UnsupportedModelError) as caught:
        build(job("median", "fp32"))
    message = str(caught.value)
    assert "aten.median" in message
    assert "encoder.1" in message and "Median" in message  # the module it came from
    assert "test-sbc" in message
    assert "Traceback" not in message


def test_microcontroller_refuses_op_outside_tflite_micro() -> None:
    # GELU is rewritten for microcontrollers (test_tflite_micro_rewrite.py); SIGN has no rewrite.
    from edgekit.backends.tflite.build import build

    with pytest.raises(UnsupportedModelError) as caught:
        build(job("sign", "int8", io="int8", kind="microcontroller"))
    message = str(caught.value)
    assert "SIGN is not in the TFLite Micro op set" in message and "test-mcu" in message
    assert "Replace the op" in message and "Traceback" not in message


def test_int8_candidates_are_timed_against_fp32_in_one_run() -> None:
    for artifact in built("cnn", "int8"):
        timing = artifact.details["vs_fp32"]
        assert timing["latency_vs_fp32"] > 0 and timing["fp32_latency_p50_ms"] > 0 and timing["latency_p50_ms"] > 0
        assert 0.0 <= timing["rounds_faster"] <= 1.0 and timing["runs"] >= 30
        assert timing["method"].startswith("interleaved with the FP32 model")
    assert not list(built("cnn", "int8")[0].path.parent.glob("*fp32-reference*"))  # the reference is not left behind
    for artifact in built("cnn", "int8", io="int8", kind="microcontroller"):
        assert "vs_fp32" not in artifact.details  # host speed says nothing about a microcontroller


def test_full_integer_io_needs_int8_precision() -> None:
    from edgekit.backends.tflite.build import build

    with pytest.raises(UnsupportedModelError, match="needs precision int8"):
        build(job("mlp", "fp16", io="int8"))


def _with_options(name: str, precision: str, **options) -> object:
    base = job(name, precision)
    return dataclasses.replace(base, request=base.request.model_copy(update={"options": options}))


def test_integer_only_drops_the_float_compute_int8_recipe() -> None:
    from edgekit.backends.tflite.build import build

    variants = {a.variant for a in build(_with_options("mlp", "int8", integer_only=True))}
    assert variants and "aeq-weight-only-wi8" not in variants
    assert variants <= {"pt2e-static", "aeq-static"}


@pytest.mark.parametrize("options, problem, fix", [
    ({"integer_onyl": True}, "unknown TFLite option(s) integer_onyl", "Known options: integer_only"),
    ({"integer_only": "yes"}, "integer_only = 'yes' is invalid", "Expected true or false"),
])
def test_bad_tflite_options_are_config_errors_naming_the_key(options: dict, problem: str, fix: str) -> None:
    from edgekit.backends.tflite.build import build

    with pytest.raises(ConfigError) as err:
        build(_with_options("mlp", "int8", **options))
    assert problem in err.value.problem and fix in err.value.fix


def test_integer_only_is_refused_for_other_precisions() -> None:
    from edgekit.backends.tflite.build import build

    with pytest.raises(ConfigError, match="applies to int8 requests"):
        build(_with_options("mlp", "fp16", integer_only=True))


class _BranchOnValue(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def test_model_torch_export_cannot_capture_is_unsupported_not_a_crash() -> None:
    from edgekit.backends.tflite.build import build

    with pytest.raises(UnsupportedModelError, match="torch.export cannot capture.*test-sbc"):
        build(dataclasses.replace(job("mlp", "fp32"), model=_BranchOnValue().eval()))


def test_static_int8_without_calibration_data_is_a_data_error() -> None:
    from edgekit.backends.tflite.build import build

    with pytest.raises(DataError, match="calibration data for input 'features'"):
        build(dataclasses.replace(job("mlp", "int8"), calibration={}))


def test_coverage_says_which_compute_ops_xnnpack_runs_and_in_integers() -> None:
    variants = by_variant(built("cnn", "int8"))
    for artifact in variants.values():
        coverage = artifact.details["coverage"]
        assert coverage["compute_ops"] == 3  # the 1-channel conv (lowered to depthwise), the conv, the linear
        assert coverage["weights_by_precision"]["int8"] == 2248 and coverage["weights_share"] > 0.98
        assert coverage["fast_path"].startswith("XNNPACK") and not coverage["partial"]
    for variant in ("pt2e-static", "aeq-static"):
        coverage = variants[variant].details["coverage"]
        assert coverage["fast_ops"] == coverage["integer_ops"] == 3, variant
    weight_only = variants["aeq-weight-only-wi8"].details["coverage"]
    assert weight_only["integer_ops"] == 0 and weight_only["fast_ops"] == 3  # float GEMMs on dequantized weights
    dynamic = variants["aeq-dynamic-wi8"].details["coverage"]
    assert dynamic["integer_ops"] == 3
    # A hybrid depthwise conv is not an XNNPACK op: it runs in the built-in kernel, and coverage says so.
    assert dynamic["compute"]["DEPTHWISE_CONV_2D"] == {"total": 1, "xnnpack": 0, "integer": 1}
    assert dynamic["not_delegated"] == ["DEPTHWISE_CONV_2D"]


def test_int4_coverage_lists_the_float_depthwise_layer_with_its_module() -> None:
    for artifact in built("cnn", "int4"):
        coverage = artifact.details["coverage"]
        (dw,) = coverage["float_ops"]
        assert dw["op"] == "DEPTHWISE_CONV_2D" and dw["elements"] == 72 and dw["module"] == "conv"
        assert "do not quantize DEPTHWISE_CONV_2D" in dw["reason"]
        assert coverage["weights_by_precision"]["int4"] >= 1152 + 1024
