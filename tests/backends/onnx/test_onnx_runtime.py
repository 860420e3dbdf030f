"""The ONNX session: inputs that do not fit are refused with the input, axis and sizes named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekit.backends import open_session
from edgekit.errors import DataError


@pytest.fixture(scope="module")
def relu_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 8, 8])],
    )
    path = tmp_path_factory.mktemp("onnx") / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(("shape", "message"), [
    ((2, 1, 8, 9), "input 'x' axis 3 is 9, but the model takes 8 (data shape (2, 1, 8, 9), model (batch, 1, 8, 8))"),
    ((2, 64), "input 'x' has shape (2, 64) (2 axes); the model takes (batch, 1, 8, 8)"),
])
def test_a_misshapen_input_names_the_axis_and_both_sizes(relu_onnx: Path, shape: tuple, message: str) -> None:
    session = open_session(relu_onnx)
    with pytest.raises(DataError) as err:
        session.run({"x": np.zeros(shape, np.float32)})
    assert err.value.problem == message and "edgekit inspect" in err.value.fix


def test_any_batch_runs(relu_onnx: Path) -> None:
    (out,) = open_session(relu_onnx).run({"x": -np.ones((5, 1, 8, 8), np.float32)})
    assert out.shape == (5, 1, 8, 8) and float(out.max()) == 0.0
