"""Microcontroller builds: GELU rewritten on a copy, transformer-style models and token ids run in TFLite Micro."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.backends.tflite import export, micro, micro_rewrite

# Tests run with --import-mode=importlib, which does not put this folder on sys.path;
# the shared tiny models live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
from tflite_testing_models import agreement, built, case, run  # noqa: E402

# The profile budget of esp32-s3 (edgekit/targets/esp32-s3.toml).
ESP32_ARENA_BYTES = 320 * 1024


def _named(name: str) -> tuple[export.NamedIO, dict[str, torch.Tensor]]:
    c = case(name)
    names = [s.name for s in c.inputs]
    module = export.NamedIO(c.model, names, c.output_names).eval()
    return module, export.batch_one(c.example_inputs(), names)


def test_gelu_rewrite_works_on_a_copy_and_costs_almost_nothing() -> None:
    module, inputs = _named("tinyformer")
    rewritten, records = micro_rewrite.for_microcontroller(module, inputs, "test-mcu")
    assert len(records) == 1 and records[0].startswith("gelu -> tanh approximation") and "(2 ops)" in records[0]
    # Both the nn.GELU module and the functional F.gelu are gone from the rewritten graph ...
    targets = {str(n.target) for n in rewritten.graph.nodes if n.op == "call_function"}
    assert not any("gelu" in t for t in targets) and any("sigmoid" in t for t in targets)
    # ... while the caller's model still has its GELU.
    assert any(isinstance(m, torch.nn.GELU) for m in module.modules())
    c = case("tinyformer")
    with torch.no_grad():
        for x in c.test["tokens"][:32]:
            feed = {"tokens": torch.from_numpy(x[None])}
            want, got = module(**feed)["scores"], rewritten(**feed)["scores"]
            assert float((want - got).abs().max()) < 1e-3  # GELU's tanh form is within ~5e-4 of exact GELU


def test_gelu_sigmoid_form_is_the_tanh_approximation() -> None:
    x = torch.linspace(-8, 8, 4001)
    tanh_form = torch.nn.functional.gelu(x, approximate="tanh")
    assert float((micro_rewrite.gelu_sigmoid_form(x) - tanh_form).abs().max()) < 1e-5
    assert float((micro_rewrite.gelu_sigmoid_form(x) - torch.nn.functional.gelu(x)).abs().max()) < 1e-3


def test_a_model_without_gelu_is_returned_untouched() -> None:
    module, inputs = _named("mlp")
    same, records = micro_rewrite.for_microcontroller(module, inputs, "test-mcu")
    assert same is module and records == []


@pytest.mark.slow
def test_transformer_style_model_builds_for_a_microcontroller_and_runs_in_tflite_micro() -> None:
    artifacts = built("tinyformer", "int8", io="int8", kind="microcontroller")
    assert artifacts
    c = case("tinyformer")
    (want,) = c.reference()
    for artifact in artifacts:
        details = artifact.details
        assert "GELU" not in details["ops"] and "LOGISTIC" in details["ops"], artifact.variant
        assert details["io"] == "int8"
        assert artifact.config["rewrites"] == details["micro"]["rewrites"]
        assert "gelu -> tanh approximation" in details["micro"]["rewrites"][0]
        facts = details["micro"]
        assert facts["flash_bytes"] == artifact.path.stat().st_size
        assert 0 < facts["arena_bytes"] <= ESP32_ARENA_BYTES
        if not micro.tflite_micro_available():
            continue
        assert facts["method"] == "measured with tflite-micro by bisection"
        assert facts["tflm_vs_litert"]["samples"] > 0 and facts["tflm_vs_litert"]["top1_agreement"] >= 0.9
        # The artifact itself, in TFLite Micro at the reported arena, on held-out data: agrees with torch.
        (tflm,) = micro.run(artifact.path.read_bytes(), c.test, facts["arena_bytes"])
        (litert,) = run(artifact, c.test)
        assert agreement(tflm, want) >= 0.85, artifact.variant
        assert agreement(tflm, litert) >= 0.95, artifact.variant


@pytest.mark.slow
def test_token_ids_stay_integers_in_a_full_integer_model() -> None:
    artifacts = built("two", "int8", io="int8", kind="microcontroller")
    assert artifacts
    for artifact in artifacts:
        interface = {d["name"]: d["dtype"] for d in artifact.details["interface"]["inputs"]}
        assert interface == {"input_ids": "int32", "attention_mask": "int32"}
        io_q = artifact.details["io_quantization"]
        assert io_q["inputs"] == {}  # nothing to quantize: ids are not scaled
        assert set(io_q["integer_inputs"]) == {"input_ids", "attention_mask"}
        assert {q["dtype"] for q in io_q["outputs"].values()} == {"int8"}
        assert artifact.details["io"] == "int8" and "rewrites" not in artifact.config
        if micro.tflite_micro_available():
            c = case("two")
            got = micro.run(artifact.path.read_bytes(), c.test, artifact.details["micro"]["arena_bytes"])
            want = c.reference()
            for g, w, name in zip(got, want, ("logits", "pooled")):
                scale = io_q["outputs"][name]["scale"]
                assert np.max(np.abs(g - w)) < 0.1 * np.max(np.abs(w)) + 4 * scale, name

