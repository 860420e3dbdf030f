"""A model that only runs at one batch (a torch.export program saved without a dynamic batch).

The TFLite backend must export it at exactly that batch, calibrate and judge
with feeds of that batch, and run any number of samples in padded blocks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.backends import TensorSpec
from edgekit.fidelity import FidelityTarget, cosine
from edgekit.model import load_file

sys.path.insert(0, str(Path(__file__).parent))
from tflite_testing_models import judged_job, run, seeded  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("batch, variants", [(1, {"litert-fp32"}), (4, {"aeq-static", "pt2e-static"})])
def test_fixed_batch_model_is_exported_at_its_batch_and_run_in_blocks(tmp_path: Path, batch: int, variants: set) -> None:
    from edgekit.backends.tflite.build import build

    model = seeded("mlp")
    x = np.random.default_rng(5).normal(size=(30, 12)).astype(np.float32)
    path = tmp_path / f"mlp-b{batch}.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(x[:batch]),)), str(path))
    loaded = load_file(path)
    assert loaded.fixed_batch == batch
    precision = "fp32" if variants == {"litert-fp32"} else "int8"
    job = judged_job(loaded.module, (TensorSpec("features", (batch, 12), "float32"),), {"features": x[:10]}, precision,
                     FidelityTarget(min_cosine=0.98), fixed_batch=batch)
    artifacts = build(job, variants=variants)
    assert {a.variant for a in artifacts} == variants
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    for artifact in artifacts:
        assert artifact.details["batch"] == batch and artifact.config["export_batch"] == batch
        assert artifact.details["interface"]["inputs"][0]["shape"] == [batch, 12]
        (got,) = run(artifact, {"features": x[:7]})  # 7 samples: blocks of the batch, the last one padded
        assert got.shape == (7, 3)
        assert cosine([got], [want[:7]]) > 0.98, artifact.variant
        if precision == "int8":
            assert artifact.config["calibration_samples"] == 10
