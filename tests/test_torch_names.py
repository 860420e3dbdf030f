"""Mapping converted nodes and refused ops back to the user's PyTorch modules."""

import torch
from torch import nn

from edgekit.torch_names import ROOT, locate_op, module_for, node_modules


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.head(self.features(x).flatten(1)) + x.new_ones(1)


def test_nodes_map_to_module_paths() -> None:
    program = torch.export.export(_Net().eval(), (torch.zeros(2, 1, 8, 8),))
    modules = node_modules(program)
    assert modules["conv2d"] == "features.0" and modules["linear"] == "head" and modules["new_ones"] == ROOT
    assert module_for("node_linear", modules) == "head"  # ONNX dynamo names
    assert module_for("model/conv2d;other", modules) == "features.0"  # TFLite-style composite names
    assert module_for("unrelated", modules) is None


def test_a_refused_op_is_located_in_the_model() -> None:
    where = locate_op(_Net().eval(), (torch.zeros(2, 1, 8, 8),), "aten::new_ones")
    assert where == [f"{ROOT} (_Net)"]
    assert locate_op(_Net().eval(), (torch.zeros(2, 1, 8, 8),), "aten.linear.default") == ["head (Linear)"]
