"""TFLite inspect: reads the flatbuffer (no interpreter, no torch) and reports I/O, ops, census."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgekit.backends.tflite.inspect import inspect
from edgekit.errors import ArtifactError

# Tests run with --import-mode=importlib, which does not put this folder on sys.path;
# the shared tiny models live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
from tflite_testing_models import built, by_variant, case  # noqa: E402

pytestmark = pytest.mark.slow


def _torch_parameters_without_bn(model) -> int:
    # BatchNorm is folded into the conv, so its 2x8 affine parameters disappear.
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("bn."))


def test_fp32_cnn_report() -> None:
    (artifact,) = built("cnn", "fp32")
    report = inspect(artifact.path)
    assert report["format"] == "tflite" and report["path"] == str(artifact.path)
    assert report["size_bytes"] == artifact.path.stat().st_size
    assert report["inputs"] == [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32", "quantization": None}]
    assert report["outputs"] == [{"name": "logits", "shape": [1, 4], "dtype": "float32", "quantization": None}]
    ops = report["ops"]
    assert ops["CONV_2D"] == 1 and ops["DEPTHWISE_CONV_2D"] == 1  # the 1-channel conv is lowered to depthwise
    assert ops["FULLY_CONNECTED"] == 1 and ops["MAX_POOL_2D"] == 1
    assert report["parameters"] == _torch_parameters_without_bn(case("cnn").model)
    assert report["weights"]["by_precision"] == {"fp32": report["parameters"]}
    assert report["quantized"] is False
    assert report["weights"] == artifact.details["weights"]  # build and inspect agree


def test_int8_report_shows_quantized_interface_and_census() -> None:
    artifact = by_variant(built("cnn", "int8", io="int8", kind="microcontroller"))["aeq-static"]
    report = inspect(artifact.path)
    (inp,) = report["inputs"]
    (out,) = report["outputs"]
    assert inp["dtype"] == out["dtype"] == "int8"
    assert inp["quantization"] == {k: v for k, v in artifact.details["io_quantization"]["inputs"]["image"].items() if k != "dtype"}
    assert report["quantized"] is True
    assert set(report["weights"]["by_precision"]) == {"int8", "int32"}
    assert report["details"]["quantized_tensors"]["int8"] > 5


def test_two_input_report_keeps_graph_order() -> None:
    (artifact,) = built("two", "fp32")
    report = inspect(artifact.path)
    assert [d["name"] for d in report["inputs"]] == ["input_ids", "attention_mask"]
    assert [d["name"] for d in report["outputs"]] == ["logits", "pooled"]
    assert report["ops"]["EMBEDDING_LOOKUP"] == 1


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x00" * 64])
def test_garbage_is_an_artifact_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match="bad.tflite"):
        inspect(path)


def test_truncated_model_is_an_artifact_error(tmp_path: Path) -> None:
    (artifact,) = built("cnn", "fp32")
    path = tmp_path / "cut.tflite"
    path.write_bytes(artifact.path.read_bytes()[:200])
    with pytest.raises(ArtifactError):
        inspect(path)
