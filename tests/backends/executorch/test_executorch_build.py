"""ExecuTorch build: every precision exports, lowers to XNNPACK, runs in ExecuTorch's runtime and matches torch.

Real torch.export, PT2E with the XNNPACK quantizer and ``executorch.runtime``
on the tiny models the TFLite tests share (``tflite_testing_models``).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.errors import ConfigError, UnsupportedModelError

sys.path.insert(0, str(Path(__file__).parents[1] / "tflite"))
from tflite_testing_models import case, job as tflite_job  # noqa: E402

pytestmark = pytest.mark.slow


def job(name: str, precision: str, **options):
    base = tflite_job(name, precision)
    request = base.request.model_copy(update={"format": "executorch", "options": options})
    return dataclasses.replace(base, request=request)


@functools.cache
def built(name: str, precision: str) -> dict:
    from edgekit.backends.executorch.build import build

    return {a.variant: a for a in build(job(name, precision))}


def run(artifact, feeds: dict[str, np.ndarray], threads: int = 1) -> list[np.ndarray]:
    from edgekit.backends import open_session

    session = open_session(artifact.path, threads=threads)
    try:
        return session.run(feeds)
    finally:
        session.close()


def test_fp32_matches_torch_for_any_batch_and_names_its_io() -> None:
    from edgekit.backends import open_session

    (artifact,) = built("cnn", "fp32").values()
    assert artifact.path.suffix == ".pte" and artifact.format == "executorch" and artifact.variant == "xnnpack-fp32"
    c = case("cnn")
    (got,) = run(artifact, c.test)  # 200 samples through a program planned for 8: chunks
    (want,) = c.reference()
    assert got.shape == want.shape == (200, 4)
    np.testing.assert_allclose(got, want, atol=1e-4)
    session = open_session(artifact.path)
    assert [s.name for s in session.inputs] == ["image"] and [s.name for s in session.outputs] == ["logits"]
    assert session.inputs[0].shape == (None, 1, 8, 8) and session.fixed_batch is None
    session.close()
    assert artifact.details["float_agreement"] == "fp32"
    assert artifact.details["weights"]["by_precision"] == {"fp32": artifact.details["weights"]["parameters"]}
    assert artifact.details["delegation"]["delegated_compute_ops"] == artifact.details["delegation"]["compute_ops"] > 0


def test_fp16_counts_each_weight_at_the_width_it_is_stored() -> None:
    (artifact,) = built("cnn", "fp16").values()
    (got,) = run(artifact, case("cnn").test)
    (want,) = case("cnn").reference()
    np.testing.assert_allclose(got, want, atol=3e-2)
    assert "float_agreement" not in artifact.details  # FP16 is judged by its quality bar
    census = artifact.details["weights"]["by_precision"]
    # ExecuTorch 1.5.1's XNNPACK serializer writes convolution weights of FP16 programs as FP32:
    # the census counts them so, and coverage names them with the reason.
    floats = {op["module"]: op for op in artifact.details["coverage"]["float_ops"]}
    assert set(floats) == {"conv", "conv2"} and census["fp32"] >= sum(op["elements"] for op in floats.values())
    assert all("stores this weight as FP32" in op["reason"] for op in floats.values())
    assert census["fp16"] >= 1024  # the linear layer's weights
    saved = next(iter(built("cnn", "fp32").values())).path.stat().st_size - artifact.path.stat().st_size
    assert saved >= census["fp16"]  # of the two bytes each FP16 weight saves, the casts around the graph cost some back


def test_static_int8_quantizes_every_weight_dynamic_only_the_linear_layers() -> None:
    made = built("cnn", "int8")
    assert set(made) == {"pt2e-static", "pt2e-dynamic"} and set(built("cnn", "dynamic-int8")) == {"pt2e-dynamic"}
    (want,) = case("cnn").reference()
    for artifact in made.values():
        (got,) = run(artifact, case("cnn").test)
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95
        assert "float_agreement" not in artifact.details
        assert artifact.details["vs_fp32"]["latency_vs_fp32"] > 0
        assert artifact.details["min_runtime_version"].count(".") == 2
    static = made["pt2e-static"].details
    assert static["coverage"]["weights_share"] > 0.95 and static["coverage"]["float_ops"] == []
    dynamic = made["pt2e-dynamic"].details  # the XNNPACK quantizer's dynamic config covers linear layers only
    assert dynamic["weights"]["by_precision"]["int8"] == 4 * 256
    assert {op["module"] for op in dynamic["coverage"]["float_ops"]} == {"conv", "conv2"}
    assert dynamic["coverage"]["partial"] is True


def test_two_integer_inputs_and_two_outputs_keep_their_names() -> None:
    (artifact,) = built("two", "fp32").values()
    c = case("two")
    got = run(artifact, c.test)
    for mine, theirs in zip(got, c.reference(), strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-4)
    from edgekit.backends.executorch.inspect import inspect

    report = inspect(artifact.path)
    assert [t["name"] for t in report["inputs"]] == ["input_ids", "attention_mask"]
    assert [t["dtype"] for t in report["inputs"]] == ["int64", "int64"]
    assert [t["name"] for t in report["outputs"]] == ["logits", "pooled"]
    assert report["ops"].get("delegate:XnnpackBackend", 0) >= 1
    assert report["parameters"] == artifact.details["weights"]["parameters"]


def test_a_fixed_batch_program_pads_the_last_chunk(tmp_path: Path) -> None:
    from edgekit.backends import open_session
    from edgekit.backends.executorch.build import build

    base = job("cnn", "fp32")
    fixed = dataclasses.replace(base, fixed_batch=4, workdir=tmp_path,
                                example_inputs=tuple(t[:1].repeat(4, *[1] * (t.dim() - 1)) for t in base.example_inputs))
    (artifact,) = build(fixed)
    session = open_session(artifact.path)
    assert session.fixed_batch == 4 and session.inputs[0].shape == (4, 1, 8, 8)
    feeds = {"image": case("cnn").test["image"][:7]}
    (got,) = session.run(feeds)  # 4 + 3 padded to 4
    session.close()
    (want,) = case("cnn").reference(feeds)
    assert got.shape == (7, 4)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_max_batch_bounds_the_planned_memory(tmp_path: Path) -> None:
    from edgekit.backends import open_session
    from edgekit.backends.executorch.build import build

    (artifact,) = build(dataclasses.replace(job("cnn", "fp32", max_batch=3), workdir=tmp_path))
    session = open_session(artifact.path)
    assert session._capacity == 3  # noqa: SLF001 - the planned bound is what this option sets
    (got,) = session.run({"image": case("cnn").test["image"][:10]})
    session.close()
    assert got.shape == (10, 4)


class _NoWeights(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).flatten(1)


def test_a_quantized_candidate_with_nothing_quantized_is_dropped(tmp_path: Path) -> None:
    from edgekit.backends.executorch.build import build

    base = job("cnn", "int8")
    plain = dataclasses.replace(base, model=_NoWeights().eval(), workdir=tmp_path, output_names=("out",))
    with pytest.raises(UnsupportedModelError, match="nothing quantized: no weight is stored in int8"):
        build(plain)


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    from edgekit.backends.executorch.build import build

    with pytest.raises(ConfigError, match="max_batch = 0 is invalid"):
        build(dataclasses.replace(job("cnn", "fp32", max_batch=0), workdir=tmp_path))
    with pytest.raises(ConfigError, match="unknown ExecuTorch option"):
        build(dataclasses.replace(job("cnn", "fp32", batch=2), workdir=tmp_path))


def test_torchscript_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    from edgekit.backends.executorch.build import build

    base = job("cnn", "fp32")
    scripted = torch.jit.trace(case("cnn").model, base.example_inputs)
    with pytest.raises(UnsupportedModelError, match="TorchScript"):
        build(dataclasses.replace(base, model=scripted, workdir=tmp_path))


class _MaskedAttention(torch.nn.Module):
    """Token attention with the padding mask added as a -1e9 bias: the range static int8 must not take."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(30, 16)
        self.q, self.k, self.v = (torch.nn.Linear(16, 16) for _ in range(3))
        self.head = torch.nn.Linear(16, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(input_ids)
        bias = (1.0 - attention_mask.float()).unsqueeze(1) * -1e9
        scores = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) * 0.25 + bias, dim=-1)
        pooled = (scores @ self.v(x)).mean(1)
        return self.head(pooled), pooled


def test_static_int8_keeps_an_additive_mask_float(tmp_path: Path) -> None:
    from edgekit.backends.executorch.build import build

    model = _MaskedAttention().eval()
    c = case("two")
    masked = dataclasses.replace(job("two", "int8"), model=model, workdir=tmp_path)
    made = {a.variant: a for a in build(masked)}
    (note,) = [n for n in made["pt2e-static"].details["notes"] if "kept float" in n]
    assert "calibrated range > 10000" in note
    with torch.no_grad():
        want = model(*(torch.from_numpy(c.test[n]) for n in ("input_ids", "attention_mask")))[0].numpy()
    (got, _) = run(made["pt2e-static"], c.test)
    cosine = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
    assert cosine > 0.99  # without the guard the -1e9 bias takes the whole int8 range (cosine -0.04 on the tokens sample)


def test_int4_packs_linear_weights_in_groups_and_lists_what_stays_float() -> None:
    (artifact,) = built("cnn", "int4").values()
    assert artifact.variant == "torchao-8da4w"
    (got,) = run(artifact, case("cnn").test)
    (want,) = case("cnn").reference()
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9
    census = artifact.details["weights"]["by_precision"]
    assert census["int4"] == 4 * 256  # the classifier, stored two weights a byte
    floats = {op["module"]: op["reason"] for op in artifact.details["coverage"]["float_ops"]}
    assert set(floats) == {"conv", "conv2"} and all("left it float" in r for r in floats.values())
    fp32 = next(iter(built("cnn", "fp32").values())).path.stat().st_size
    assert artifact.path.stat().st_size < fp32
