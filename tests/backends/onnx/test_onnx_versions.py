"""The oldest onnxruntime an ONNX model needs, read from its opset and IR version."""

from __future__ import annotations

import importlib.metadata

import onnx
import pytest
from onnx import TensorProto, helper

from edgekit.backends.onnx.versions import min_onnxruntime


def _model(opset: int, ir_version: int) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = ir_version
    return model


@pytest.mark.parametrize(("opset", "ir_version", "runtime"), [
    (21, 10, "1.18.0"),  # what edgekit's exporter writes: int4 DequantizeLinear needs it
    (17, 8, "1.13.0"),
    (17, 10, "1.18.0"),  # an old opset in a newer IR needs the runtime that reads that IR
    (20, 9, "1.17.0"),
])
def test_the_opset_and_ir_version_name_the_oldest_runtime(opset: int, ir_version: int, runtime: str) -> None:
    assert min_onnxruntime(_model(opset, ir_version)) == runtime


def test_a_model_newer_than_the_table_needs_the_runtime_that_validated_it() -> None:
    assert min_onnxruntime(_model(23, 11)) == importlib.metadata.version("onnxruntime")
