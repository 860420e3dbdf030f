"""Core ML conversion routes: rewrites that make coremltools 9.0 convert, errors that name the op and
module, fixed-batch models, and the fidelity fallback search with its records.

Real torch.export programs and coremltools conversions of tiny models; the
packages run in edgekit's emulator.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends import open_session
from edgekit.errors import UnsupportedModelError

sys.path.insert(0, str(Path(__file__).parent))
from coreml_testing import built, by_variant, job, reference, sample  # noqa: E402

pytestmark = pytest.mark.slow


def test_new_ones_fails_as_exported_and_converts_after_targeted_decomposition() -> None:
    import coremltools as ct
    import torch

    from edgekit.backends.coreml import export

    s = sample("new_ones")
    # As the old route did it: torch.export + run_decompositions({}) -> coremltools has no new_ones converter.
    program = torch.export.export(s.module, tuple(torch.from_numpy(v[:2]) for v in s.feeds.values()))
    with pytest.raises(NotImplementedError, match="new_ones|__and__"), export.quiet():
        ct.convert(program.run_decompositions({}), convert_to="mlprogram", skip_model_load=True,
                   minimum_deployment_target=ct.target.iOS18)
    (artifact,) = built("new_ones", "fp32", "iphone-ios18")
    rewrites = artifact.details["rewrites"]
    assert artifact.config["rewrites"] == rewrites and artifact.details["flexible_batch"]
    assert any("new_ones" in r for r in rewrites) and any("__and__" in r for r in rewrites)
    # where(mask, 0.0, -1e4): coremltools declared the select a scalar; the MIL pass gives it the mask's shape
    assert any(r.startswith("select shape repaired") for r in rewrites)
    assert any("node new_ones in module 'masks'" in note for note in artifact.details["notes"])
    out = open_session(artifact.path).run(s.feeds)[0]
    assert np.abs(out - reference("new_ones")[0]).max() < 1e-4


def test_a_float32_min_mask_stays_finite_in_an_fp16_program() -> None:
    (artifact,) = [a for a in built("float_min_mask", "fp16", "iphone-ios18") if a.details["compute_precision"] == "fp16"]
    assert any(r.startswith("constants beyond FP16's range clamped") for r in artifact.details["rewrites"])
    s = sample("float_min_mask")
    out = open_session(artifact.path).run(s.feeds)[0]
    assert np.isfinite(out).all()  # unclamped, 0 * -inf made every output NaN
    assert np.abs(out - reference("float_min_mask")[0]).max() < 2e-2


def test_an_op_no_route_converts_is_named_with_its_module(tmp_path: Path) -> None:
    from edgekit.backends.coreml import build

    with pytest.raises(UnsupportedModelError) as info:
        build.build(job("unsupported", "fp32", "iphone-ios18", workdir=tmp_path))
    message = info.value.message
    assert "no converter handles aten.special_bessel_j0.default (node special_bessel_j0 in module 'block.1')" in message
    assert "run_decompositions() (core ATen)" in message and "jit.trace" in message  # every route was tried


def test_fixed_batch_pt2_converts_at_its_batch_and_the_session_pads(tmp_path: Path) -> None:
    import torch

    from edgekit.backends import ExportJob, TensorSpec
    from edgekit.backends.coreml import build, runtime
    from edgekit.config import ArtifactRequest, load_profile
    from edgekit.model import load_file

    s = sample("mlp")
    x = torch.from_numpy(s.feeds["x"])
    torch.export.save(torch.export.export(s.module, (x[:4],)), str(tmp_path / "mlp.pt2"))
    loaded = load_file(tmp_path / "mlp.pt2")
    assert loaded.fixed_batch == 4
    calibration = {"x": s.feeds["x"][:10]}
    with torch.no_grad():
        calibration_reference = (torch.cat([loaded.module(x[i:i + 4]) for i in (0, 4, 8)])[:10].numpy(),)
    fixed_job = ExportJob(
        model=loaded.module, example_inputs=(x[:4],), inputs=(TensorSpec("x", (4, *s.feeds["x"].shape[1:]), "float32"),),
        output_names=("logits",), request=ArtifactRequest(format="coreml", precision="int8"),
        profile=load_profile("iphone-ios18"), calibration=calibration, workdir=tmp_path / "work", stem="mlp",
        reference=calibration_reference, fixed_batch=4)
    fixed_job.workdir.mkdir()
    (artifact,) = build.build(fixed_job)
    assert artifact.details["batch"] == 4 and artifact.details["flexible_batch"] is False
    assert not any("flexible batch did not convert" in note for note in artifact.details["notes"])
    package_input = runtime.load_package(artifact.path).inputs[0]
    assert package_input.shape[0] == 4 and not package_input.ranges  # exactly batch 4, not flexible, not 1
    assert artifact.config["calibration_fidelity"]["samples"] == 10  # the search fed 4 + 4 + 2 padded to 4
    session = open_session(artifact.path)
    out = session.run({"x": s.feeds["x"][:10]})[0]  # 10 samples: chunks of 4, the last padded
    assert out.shape == (10, 10)
    assert np.abs(out - calibration_reference[0]).max() < 0.1


def test_fallback_search_keeps_the_damaging_layer_wider_and_records_it() -> None:
    from edgekit.fidelity import measure

    candidates = by_variant(built("outliers", "int4", "iphone-ios18"))
    artifact = candidates["int4-block32"]
    fallback = artifact.details["fallback"]
    assert fallback["met"] and 1 <= fallback["rounds"] <= 6 and fallback["signal"]
    assert fallback["bar"] == {"min_cosine": 0.97, "min_top1_agreement": 0.90, "min_sqnr_db": 10.0}  # the int4 bar
    assert fallback["before"]["top1_agreement"] < 0.90 <= fallback["after"]["top1_agreement"]  # measured 0.85 -> 0.925
    kept = fallback["kept_float"]
    assert [w["module"] for w in kept] == ["fc2"] and kept[0]["op"] == "linear" and kept[0]["error"] > 0
    wider = artifact.config["int8_for_fidelity"] or artifact.config["kept_float_for_fidelity"]
    assert wider == [kept[0]["name"]]
    # the shipped package stores fc2 wider than int4, says why, and clears the bar on held-out data too
    coverage = artifact.details["coverage"]
    reasons = [op["reason"] for op in coverage["float_ops"] if op.get("module") == "fc2"]
    assert any("fidelity search" in r for r in reasons) and any("weight_threshold" in r for r in reasons)  # + bias
    assert "fast_share" not in coverage and "emulated" in coverage["fast_path"]
    held_out = measure(open_session(artifact.path).run(sample("outliers").feeds), reference("outliers"))
    assert held_out["cosine"] >= 0.97
