"""Tiny ONNX models for the bench tests, written with onnx.helper into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnx
import onnxruntime  # noqa: F401

from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def save_model(path: Path, nodes: list, inputs: list, outputs: list, weights: dict[str, np.ndarray]) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs,
                              [numpy_helper.from_array(w, name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def mlp(path: Path, batch: int | str = "batch", features: int = 16) -> Path:
    """x[batch, features] → MatMul(features→32) → Relu → MatMul(32→4) → y."""
    rng = np.random.default_rng(0)
    return save_model(
        path,
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        {"w1": rng.standard_normal((features, 32)).astype(np.float32),
         "w2": rng.standard_normal((32, 4)).astype(np.float32)},
    )


@pytest.fixture
def mlp_onnx(tmp_path: Path) -> Path:
    return mlp(tmp_path / "mlp.onnx")


@pytest.fixture
def fixed_batch_onnx(tmp_path: Path) -> Path:
    return mlp(tmp_path / "fixed.onnx", batch=1)


@pytest.fixture
def two_input_onnx(tmp_path: Path) -> Path:
    """tokens[batch, 8] int64 → Cast → Add(feats[batch, 8]) → y: one float and one integer input."""
    return save_model(
        tmp_path / "two.onnx",
        [helper.make_node("Cast", ["tokens"], ["t"], to=TensorProto.FLOAT), helper.make_node("Add", ["t", "feats"], ["y"])],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", 8]),
         helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        {},
    )


@pytest.fixture
def dynamic_seq_onnx(tmp_path: Path) -> Path:
    """x[batch, seq] → Relu: the sequence length cannot be guessed."""
    return save_model(
        tmp_path / "seq.onnx",
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])],
        {},
    )
