"""TFLite candidates against the fidelity bar: fallback searches, embeddings, recurrent weights, empty recipes.

Real litert-torch, ai-edge-quantizer and LiteRT on tiny models built to show
one behaviour each; every build is limited to the recipes the test is about.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.backends import TensorSpec
from edgekit.errors import UnsupportedModelError
from edgekit.fidelity import FidelityTarget, cosine

sys.path.insert(0, str(Path(__file__).parent))
from tflite_testing_models import DepthwiseOnly, OutlierMLP, TinyGRU, judged_job, run  # noqa: E402

pytestmark = pytest.mark.slow

RNG = np.random.default_rng(7)
FEATURES = (TensorSpec("features", (None, 12), "float32"),)


def _build(job, *variants: str):
    from edgekit.backends.tflite.build import build

    return {a.variant: a for a in build(job, variants=set(variants))}


def test_fallback_search_makes_a_ruined_static_int8_clear_the_bar() -> None:
    torch.manual_seed(0)
    model = OutlierMLP().eval()
    x = RNG.normal(size=(160, 12)).astype(np.float32)
    job = judged_job(model, FEATURES, {"features": x[:96]}, "int8", FidelityTarget(min_cosine=0.99, min_sqnr_db=15.0))
    (static,) = _build(job, "aeq-static").values()
    record = static.details["fallback"]
    assert record["before"]["cosine"] < 0.9, record["before"]  # the outlier channel's int8 step wipes the others
    assert record["met"] and record["after"]["cosine"] >= 0.99 and 1 <= record["rounds"] <= 8
    kept = record["kept_float"]
    assert kept and {e["op"] for e in kept} >= {"FULLY_CONNECTED"}
    assert "outlier" in {e["module"] for e in kept}  # mapped back to the torch module
    assert len(kept) < 6  # the few ops around the outlier tensor, not the whole model
    assert static.config["kept_float_for_fidelity"] == [e["name"] for e in kept]
    assert "signal" in record and record["bar"] == {"min_cosine": 0.99, "min_sqnr_db": 15.0}
    # On held-out data the shipped bytes keep what the search found; weights stay int8 everywhere.
    test = x[96:]
    with torch.no_grad():
        want = model(torch.from_numpy(test)).numpy()
    (got,) = run(static, {"features": test})
    assert cosine([got], [want]) >= 0.98
    assert set(static.details["weights"]["by_precision"]) <= {"int8", "int32", "fp32"}
    assert static.details["coverage"]["weights_share"] > 0.9


def test_int4_quantizes_embedding_tables() -> None:
    from tflite_testing_models import case

    c = case("two")
    job = judged_job(c.model, c.inputs, c.calibration, "int4", FidelityTarget(), output_names=c.output_names)
    (artifact,) = _build(job, "aeq-dynamic-wi4").values()
    by_op = artifact.details["weights"]["by_op"]
    assert by_op["EMBEDDING_LOOKUP"] == {"int4": 30 * 16}  # litert-torch lowers nn.Embedding to EMBEDDING_LOOKUP
    assert by_op["FULLY_CONNECTED"]["int4"] == 16 * 16 + 16 * 3
    coverage = artifact.details["coverage"]
    assert coverage["compute"]["EMBEDDING_LOOKUP"]["integer"] == 1  # rows are read from the int4 table
    got = run(artifact, c.test)
    assert cosine(got[1:], c.reference()[1:]) > 0.95


def test_int4_search_raises_the_most_damaging_layers_to_int8() -> None:
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(12, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 3)).eval()
    x = RNG.normal(size=(96, 12)).astype(np.float32)
    job = judged_job(model, FEATURES, {"features": x}, "int4", FidelityTarget(min_cosine=0.9995))
    (artifact,) = _build(job, "aeq-dynamic-wi4").values()
    record = artifact.details["fallback"]
    assert record["before"]["cosine"] < 0.9995 and record["rounds"] >= 2
    raised = record["raised_to_int8"]
    assert raised and all(e["op"] == "FULLY_CONNECTED" and e["module"] in {"0", "2", "4"} for e in raised)
    assert artifact.config["raised_to_int8_for_fidelity"] == [e["name"] for e in raised]
    stored = artifact.details["weights"]["by_precision"]
    if record["met"]:
        assert record["after"]["cosine"] >= 0.9995
    assert stored.get("int8", 0) > 0 and stored.get("int4", 0) + stored.get("int8", 0) > 64 * 64


@pytest.mark.parametrize("cell", ["GRU", "LSTM"])
def test_recurrent_weights_are_quantized(cell: str) -> None:
    torch.manual_seed(0)
    model = TinyGRU(cell).eval()
    x = RNG.normal(size=(64, 6, 5)).astype(np.float32)
    spec = (TensorSpec("x", (None, 6, 5), "float32"),)
    job = judged_job(model, spec, {"x": x}, "int8", FidelityTarget())
    built = _build(job, "aeq-dynamic-wi8", "aeq-weight-only-wi8")
    rnn_params = sum(p.numel() for n, p in model.rnn.named_parameters() if "weight" in n)
    for artifact in built.values():
        fc = artifact.details["weights"]["by_op"]["FULLY_CONNECTED"]
        assert fc.get("int8", 0) >= rnn_params, (artifact.variant, fc)  # litert-torch unrolls the cell into FCs
        assert artifact.details["coverage"]["weights_share"] > 0.9
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        (got,) = run(artifact, {"x": x})
        assert cosine([got], [want]) > 0.99


def test_a_recipe_that_quantizes_nothing_is_dropped() -> None:
    torch.manual_seed(0)
    x = RNG.normal(size=(32, 4, 6, 6)).astype(np.float32)
    spec = (TensorSpec("image", (None, 4, 6, 6), "float32"),)
    job = judged_job(DepthwiseOnly(), spec, {"image": x}, "int4", FidelityTarget())
    with pytest.raises(UnsupportedModelError) as caught:
        _build(job, "aeq-dynamic-wi4", "aeq-weight-only-wi4")
    message = str(caught.value)
    assert "nothing quantized" in message and "no weight stored in int4" in message
    assert "DEPTHWISE" not in message or "fp32" in message
