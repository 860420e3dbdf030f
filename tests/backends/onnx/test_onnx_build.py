"""The ONNX backend on real exports: every precision, the census, and the int8 mask guard."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgekit.backends import ExportJob, TensorSpec, open_session
from edgekit.backends.onnx import build as onnx_build
from edgekit.backends.onnx.census import weight_census
from edgekit.backends.onnx.inspect import inspect
from edgekit.backends.onnx.quantize import gemm_to_matmul
from edgekit.config import ArtifactRequest, load_profile
from edgekit.errors import ArtifactError
from edgekit.model import load_factory


def _job(model_files, tmp_path: Path, precision: str) -> tuple[ExportJob, dict[str, np.ndarray], torch.nn.Module]:
    loaded = load_factory(model_files.factory, model_files.weights, tmp_path)
    with np.load(model_files.data) as archive:
        feeds = {n: archive[n] for n in loaded.input_names} if "x" not in archive.files else {"x": archive["x"]}
    specs = tuple(TensorSpec(n, (None, *a.shape[1:]), str(a.dtype)) for n, a in feeds.items())
    outputs = ("logits",) if len(loaded.input_names) == 1 else ("logits", "embedding")
    job = ExportJob(
        model=loaded.module,
        example_inputs=tuple(torch.from_numpy(a[:2]) for a in feeds.values()),
        inputs=specs,
        output_names=outputs,
        request=ArtifactRequest(format="onnx", precision=precision),
        profile=load_profile("jetson-orin-nano"),
        calibration={k: v[:48] for k, v in feeds.items()},
        workdir=tmp_path,
        stem="m",
    )
    return job, {k: v[48:] for k, v in feeds.items()}, loaded.module


def _reference(module: torch.nn.Module, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(v) for v in feeds.values()])
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


EXPECTED_WEIGHT_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "dynamic-int8": "int8", "int4": "int4"}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "dynamic-int8", "int4"])
def test_every_precision_runs_in_onnxruntime_and_is_what_it_claims(tiny_cnn, tmp_path: Path, precision: str) -> None:
    job, feeds, module = _job(tiny_cnn, tmp_path, precision)
    candidates = onnx_build.build(job)
    assert candidates
    reference = _reference(module, feeds)[0]
    tolerance = {"fp32": 1e-4, "fp16": 5e-2}.get(precision, 0.5)
    for artifact in candidates:
        session = open_session(artifact.path)
        assert session.inputs[0].shape[0] is None  # dynamic batch survives every precision
        out = session.run(feeds)[0]
        assert out.shape == reference.shape
        assert np.abs(out - reference).max() < tolerance, artifact.variant
        assert (out.argmax(1) == reference.argmax(1)).mean() >= 0.9
        census = weight_census(onnx.load(str(artifact.path)))
        main = EXPECTED_WEIGHT_PRECISION[precision]
        # the bulk of the weights is in the claimed precision (biases may stay wider)
        assert census["by_precision"][main] >= 0.9 * census["parameters"], census


def test_int8_offers_several_measured_forms(tiny_cnn, tmp_path: Path) -> None:
    job, _, _ = _job(tiny_cnn, tmp_path, "int8")
    variants = {a.variant for a in onnx_build.build(job)}
    assert {"qdq-static-u8s8", "qoperator-static-u8s8", "dynamic"} <= variants


def test_int4_is_smaller_than_int8(tiny_cnn, tmp_path: Path) -> None:
    job8, _, _ = _job(tiny_cnn, tmp_path / "a", "int8")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    job4, _, _ = _job(tiny_cnn, tmp_path / "b", "int4")
    smallest_int8 = min(a.size_bytes for a in onnx_build.build(job8))
    int4 = onnx_build.build(job4)[0]
    assert int4.size_bytes < smallest_int8
    assert int4.details["weights"]["by_op"]["Conv"].get("int4", 0) > 0
    assert int4.details["weights"]["by_op"]["MatMulNBits"]["int4"] > 0


def test_gemm_rewrite_preserves_results(tiny_cnn, tmp_path: Path) -> None:
    job, feeds, _ = _job(tiny_cnn, tmp_path, "fp32")
    fp32 = onnx_build.build(job)[0].path
    model, left = gemm_to_matmul(onnx.load(str(fp32)))
    assert not left and not any(n.op_type == "Gemm" for n in model.graph.node)
    rewritten = tmp_path / "rewritten.onnx"
    onnx.save(model, str(rewritten))
    assert np.allclose(open_session(rewritten).run(feeds)[0], open_session(fp32).run(feeds)[0], atol=1e-5)


def test_attention_mask_bias_does_not_wreck_int8(token_encoder, tmp_path: Path) -> None:
    """A -1e9 mask bias would set a huge calibration range; those nodes must stay float."""
    job, feeds, module = _job(token_encoder, tmp_path, "int8")
    reference = _reference(module, feeds)
    candidates = onnx_build.build(job)
    static = [a for a in candidates if "static" in a.variant]
    assert static
    assert any("kept float" in note for note in static[0].details["notes"])
    for artifact in static:
        outputs = open_session(artifact.path).run(feeds)
        assert len(outputs) == 2
        for out, ref in zip(outputs, reference):
            a, b = out.reshape(len(out), -1), ref.reshape(len(ref), -1)
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            assert cos.mean() > 0.99, artifact.variant


def test_inspect_reports_io_ops_and_quantization(tiny_cnn, tmp_path: Path) -> None:
    job, _, _ = _job(tiny_cnn, tmp_path, "int8")
    artifact = onnx_build.build(job)[0]
    report = inspect(artifact.path)
    assert report["format"] == "onnx" and report["quantized"]
    assert report["inputs"] == [{"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32"}] or \
        report["inputs"][0]["shape"][1:] == [1, 8, 8]
    assert report["outputs"][0]["name"] == "logits"
    assert report["parameters"] > 0 and sum(report["ops"].values()) > 0


def test_corrupt_onnx_is_refused_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ArtifactError):
        open_session(path)
    with pytest.raises(ArtifactError):
        inspect(path)


def test_int4_keeps_sensitive_convs_float_when_agreement_needs_it(tiny_cnn, tmp_path: Path) -> None:
    from edgekit.backends.onnx.quantize import int4_weight_only

    job, _, _ = _job(tiny_cnn, tmp_path, "fp32")
    fp32 = onnx_build.build(job)[0].path
    # Demanding perfect agreement forces the sensitivity search to keep Convs float.
    _, left, record = int4_weight_only(fp32, tmp_path / "strict.onnx", job.calibration, min_agreement=1.0)
    assert record["agreement_all_int4"] <= 1.0
    if record["agreement_all_int4"] < 1.0:
        assert record["kept_float_for_accuracy"] and set(record["kept_float_for_accuracy"]) <= set(left)
        assert set(record["sensitivity"]) == {n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"}
    _, _, lenient = int4_weight_only(fp32, tmp_path / "lenient.onnx", job.calibration, min_agreement=0.0)
    assert lenient["kept_float_for_accuracy"] == []
