"""The ONNX backend on real exports: every precision and recipe, the fallback search, int4 lookups,
recurrent weights, coverage, fixed-batch models and FP16 validity.

Builds are shared through ``_Builds`` (one export per model, reused by every
precision), so the whole file stays within about a minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgekit.artifact import Artifact
from edgekit.batching import run_in_chunks
from edgekit.backends import ExportJob, TensorSpec, open_session
from edgekit.backends.onnx import build as onnx_build
from edgekit.backends.onnx import coverage, fallback, graph, quantize
from edgekit.backends.onnx.census import weight_census
from edgekit.backends.onnx.inspect import inspect
from edgekit.backends.onnx.quantize import gemm_to_matmul
from edgekit.config import ArtifactRequest, load_profile
from edgekit.errors import ArtifactError
from edgekit.fidelity import FidelityTarget, measure
from edgekit.model import load_factory

PROFILE = load_profile("jetson-orin-nano")
CALIBRATION = 48


# ----------------------------------------------------------------- models made here


class OutlierMLP(nn.Module):
    """A residual block whose branch has one channel ~300x the others, then LayerNorm: static int8's nightmare.

    A per-tensor uint8 range stretched by that channel leaves the other
    channels of the residual sum a handful of codes; LayerNorm then amplifies
    their error (what trained transformers' activation outliers do).
    """

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(16, 32)
        self.down = nn.Linear(32, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 8)
        with torch.no_grad():
            self.down.weight[3] *= 300.0
            self.down.bias[3] = 0.0
            self.norm.weight[3] = 0.002  # the outlier channel carries little after the norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x + self.down(torch.relu(self.up(x)))))


class TokenBag(nn.Module):
    """An embedding table big enough to quantize (600 x 64) feeding a small head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(600, 64)
        self.head = nn.Linear(64, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(1))


class TinyGRU(nn.Module):
    """Two GRU layers (the dynamo exporter emits GRU ops fed by Slice/Concat weight chains) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(16, 48, num_layers=2, batch_first=True)
        self.head = nn.Linear(48, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@dataclass
class Built:
    candidates: list[Artifact]
    job: ExportJob
    evaluation: dict[str, np.ndarray]
    reference: list[np.ndarray]  # FP32 torch outputs on ``evaluation``


def _torch_outputs(module: nn.Module, feeds: dict[str, np.ndarray], fixed_batch: int | None = None) -> list[np.ndarray]:
    def run(batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*[torch.from_numpy(v) for v in batch.values()])
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    return run_in_chunks(run, feeds, fixed_batch) if fixed_batch else run(feeds)


def make_job(module: nn.Module, feeds: dict[str, np.ndarray], outputs: tuple[str, ...], workdir: Path, precision: str,
             classes: bool, fixed_batch: int | None = None) -> tuple[ExportJob, dict[str, np.ndarray]]:
    """An ExportJob as the pipeline makes it: calibration split, FP32 reference, the profile's fidelity bar."""
    calibration = {k: v[:CALIBRATION] for k, v in feeds.items()}
    evaluation = {k: v[CALIBRATION:] for k, v in feeds.items()}
    budgets = PROFILE.budgets_for(precision)
    bar = FidelityTarget(budgets.min_cosine, budgets.min_top1_agreement if classes else None, budgets.min_sqnr_db)
    batch = fixed_batch or 2
    job = ExportJob(
        model=module,
        example_inputs=tuple(torch.from_numpy(a[:batch]) for a in feeds.values()),
        inputs=tuple(TensorSpec(n, (fixed_batch, *a.shape[1:]), str(a.dtype)) for n, a in feeds.items()),
        output_names=outputs,
        request=ArtifactRequest(format="onnx", precision=precision),
        profile=PROFILE,
        calibration=calibration,
        workdir=workdir,
        stem="m",
        reference=tuple(_torch_outputs(module, calibration, fixed_batch)),
        fidelity=bar,
        fixed_batch=fixed_batch,
    )
    return job, evaluation


def _job(model_files, tmp_path: Path, precision: str) -> tuple[ExportJob, dict[str, np.ndarray], nn.Module]:
    """A job for a conftest fixture model (test_onnx_fp32_timing builds its own)."""
    loaded = load_factory(model_files.factory, model_files.weights, tmp_path)
    with np.load(model_files.data) as archive:
        feeds = {"x": archive["x"]} if "x" in archive.files else {n: archive[n] for n in loaded.input_names}
        classes = "y" in archive.files
    outputs = ("logits",) if len(feeds) == 1 else ("logits", "embedding")
    job, evaluation = make_job(loaded.module, feeds, outputs, tmp_path, precision, classes)
    return job, evaluation, loaded.module


class _Builds:
    """Builds on demand, once each (the backend exports each model once and reuses it for every precision)."""

    def __init__(self, root: Path, models: dict[str, tuple[nn.Module, dict[str, np.ndarray], tuple[str, ...], bool]]) -> None:
        self.root = root
        self.models = models
        self.done: dict[tuple[str, str], Built] = {}

    def __call__(self, model: str, precision: str) -> Built:
        key = (model, precision)
        if key not in self.done:
            module, feeds, outputs, classes = self.models[model]
            workdir = self.root / f"{model}-{precision}"
            workdir.mkdir(parents=True)
            job, evaluation = make_job(module, feeds, outputs, workdir, precision, classes)
            self.done[key] = Built(onnx_build.build(job), job, evaluation, _torch_outputs(module, evaluation))
        return self.done[key]


@pytest.fixture(scope="module")
def builds(tiny_cnn, token_encoder, tmp_path_factory: pytest.TempPathFactory) -> _Builds:
    models = {}
    for name, files in (("cnn", tiny_cnn), ("encoder", token_encoder)):
        loaded = load_factory(files.factory, files.weights, files.folder)
        with np.load(files.data) as archive:
            feeds = {"x": archive["x"]} if "x" in archive.files else {n: archive[n] for n in loaded.input_names}
            classes = "y" in archive.files
        outputs = ("logits",) if len(feeds) == 1 else ("logits", "embedding")
        models[name] = (loaded.module, feeds, outputs, classes)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    models["outlier"] = (OutlierMLP().eval(), {"x": rng.standard_normal((64, 16)).astype(np.float32)}, ("y",), True)
    torch.manual_seed(0)
    models["bag"] = (TokenBag().eval(), {"ids": rng.integers(0, 600, (64, 10)).astype(np.int64)}, ("y",), True)
    torch.manual_seed(0)
    models["gru"] = (TinyGRU().eval(), {"x": rng.standard_normal((64, 12, 16)).astype(np.float32)}, ("y",), True)
    return _Builds(tmp_path_factory.mktemp("onnx-builds"), models)


def _cosine(built: Built, artifact: Artifact) -> float:
    return measure(open_session(artifact.path).run(built.evaluation), built.reference)["cosine"]


# ----------------------------------------------------------------- every precision

EXPECTED_WEIGHT_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "dynamic-int8": "int8", "int4": "int4"}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "dynamic-int8", "int4"])
def test_every_precision_runs_in_onnxruntime_and_is_what_it_claims(builds: _Builds, precision: str) -> None:
    built = builds("cnn", precision)
    assert built.candidates
    reference = built.reference[0]
    tolerance = {"fp32": 1e-4, "fp16": 5e-2}.get(precision, 0.5)
    for artifact in built.candidates:
        session = open_session(artifact.path)
        assert session.inputs[0].shape[0] is None  # dynamic batch survives every precision
        out = session.run(built.evaluation)[0]
        assert out.shape == reference.shape
        assert np.abs(out - reference).max() < tolerance, artifact.variant
        assert (out.argmax(1) == reference.argmax(1)).mean() >= 0.9
        census = weight_census(onnx.load(str(artifact.path)))
        main = EXPECTED_WEIGHT_PRECISION[precision]
        # the bulk of the weights is in the claimed precision (biases may stay wider); int4 keeps layers
        # under int4.MIN_INT4_WEIGHTS (this CNN's two convs) in int8
        stored = census["by_precision"][main] + (census["by_precision"].get("int8", 0) if main == "int4" else 0)
        assert census["by_precision"][main] > 0 and stored >= 0.9 * census["parameters"], census
        assert artifact.details["coverage"]["precision"] == precision
        assert graph.checker_problem(artifact.path) is None  # what other ONNX consumers accept, not only onnxruntime
        assert artifact.facts.min_runtime_version == "1.18.0"  # opset 21, IR 10, read from the file


def test_one_export_serves_every_precision_of_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = onnx_build.exporter.export
    monkeypatch.setattr(onnx_build.exporter, "export", lambda job, path: calls.append(path) or real(job, path))
    torch.manual_seed(7)  # weights no other test has exported in this process
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    feeds = {"x": np.random.default_rng(7).standard_normal((64, 16)).astype(np.float32)}
    paths = []
    for precision in ("fp32", "fp16"):
        (tmp_path / precision).mkdir()
        job, _ = make_job(model, feeds, ("y",), tmp_path / precision, precision, True)
        onnx_build.build(job)
        paths.append(tmp_path / precision / "m.fp32.onnx")
    assert len(calls) == 1 and paths[0].read_bytes() == paths[1].read_bytes()
    with torch.no_grad():
        model[0].weight.add_(1.0)  # other weights: a new export
    (tmp_path / "changed").mkdir()
    onnx_build.build(make_job(model, feeds, ("y",), tmp_path / "changed", "fp32", True)[0])
    assert len(calls) == 2


def test_int8_offers_every_recipe(builds: _Builds) -> None:
    """Static QDQ and QOperator, dynamic and weight-only: selection picks the fast one that clears the bar."""
    candidates = builds("cnn", "int8").candidates
    assert {a.variant for a in candidates} == {"qdq-static-u8s8", "qoperator-static-u8s8", "dynamic", "weight-only-int8"}
    weight_only = next(a for a in candidates if a.variant == "weight-only-int8")
    ops = {n.op_type for n in onnx.load(str(weight_only.path)).graph.node}
    assert {"Cast", "Mul"} <= ops and not ops & {"QuantizeLinear", "DynamicQuantizeLinear"}  # float compute
    # onnxruntime folds the int8 -> float dequantization at load: what runs is the float graph.
    assert not {op for op, _ in coverage.optimized_ops(weight_only.path)} & {"Cast", "Mul"}


def test_int4_is_smaller_than_int8(builds: _Builds) -> None:
    smallest_int8 = min(a.size_bytes for a in builds("cnn", "int8").candidates)
    (int4,) = builds("cnn", "int4").candidates
    assert int4.size_bytes < smallest_int8
    assert int4.details["weights"]["by_op"]["MatMulNBits"]["int4"] > 0
    # The two convs (72 and 1152 weights) are under MIN_INT4_WEIGHTS: int8, and the config says so.
    assert set(int4.config["small_layers_int8"]) == {n for n, op in _ops(int4.path).items() if op == "Conv"}
    assert int4.details["weights"]["by_op"]["Conv"].get("int8", 0) > 0


def _ops(path: Path) -> dict[str, str]:
    return {n.name: n.op_type for n in onnx.load(str(path)).graph.node}


def test_gemm_rewrite_preserves_results(builds: _Builds, tmp_path: Path) -> None:
    built = builds("cnn", "fp32")
    fp32 = built.candidates[0].path
    model, left = gemm_to_matmul(onnx.load(str(fp32)))
    assert not left and not any(n.op_type == "Gemm" for n in model.graph.node)
    rewritten = tmp_path / "rewritten.onnx"
    onnx.save(model, str(rewritten))
    assert np.allclose(open_session(rewritten).run(built.evaluation)[0], open_session(fp32).run(built.evaluation)[0],
                       atol=1e-5)


# ----------------------------------------------------------------- fallback search


def test_attention_mask_bias_does_not_wreck_int8(builds: _Builds) -> None:
    """The -1e9 mask bias stays float, and the fallback search makes both static forms clear the bar.

    What ruined static here (cosine 0.966) was not calibration: the token
    encoder's uint8 x int8 products saturate the 16-bit sums of this x86
    host's kernels (no VNNI); with the same ranges, 7-bit weights give
    0.9997. The search's first round tries exactly that, so the test now
    asserts the bar is met on held-out data and that the record says how.
    """
    built = builds("encoder", "int8")
    static = [a for a in built.candidates if "static" in a.variant]
    assert len(static) == 2
    assert any("calibrated range" in note for note in static[0].details["notes"])
    for artifact in static:
        outputs = open_session(artifact.path).run(built.evaluation)
        assert len(outputs) == 2
        assert measure(outputs, built.reference)["cosine"] > 0.99, artifact.variant
        record = artifact.details["fallback"]
        assert record["met"] and record["before"]["cosine"] < 0.99 <= record["after"]["cosine"]
        assert record["bar"] == {"min_cosine": 0.99, "min_sqnr_db": 15.0}
    assert static[0].details["fallback"]["reduce_range"] and static[0].config["reduce_range"]


def test_fallback_search_keeps_the_outlier_nodes_float(builds: _Builds) -> None:
    """A residual stream with a 300x channel ruins static int8; the search keeps its Add/LayerNorm float."""
    built = builds("outlier", "int8")
    qdq = next(a for a in built.candidates if a.variant == "qdq-static-u8s8")
    record = qdq.details["fallback"]
    assert record["before"]["cosine"] < 0.99, "the fixture should ruin static int8"
    assert record["met"] and record["after"]["cosine"] >= 0.99
    assert 1 <= record["rounds"] <= fallback.MAX_ROUNDS + 1
    kept = {row["name"]: row for row in record["kept_float"]}
    assert kept and set(kept) == set(qdq.config["kept_float_for_fidelity"])
    assert any(row["module"] in ("norm", "down") for row in kept.values())
    assert all(row["error"] > 0 for row in kept.values())
    # Kept-float nodes with weights show up in coverage with the search as their reason.
    reasons = {op["name"]: op["reason"] for op in qdq.details["coverage"]["float_ops"]}
    assert all("fidelity" in reasons[name] for name in kept if name in reasons)
    assert _cosine(built, qdq) > 0.98  # held-out data, not the calibration split the search saw
    # The rest of the graph is still int8: the search kept the fewest, not everything.
    assert qdq.details["weights"]["by_op"]["Gemm"].get("int8", 0) > 0
    assert len(record["tried"]) == record["rounds"] - len(record["steps"])


def test_search_is_bounded_whatever_the_graph_size() -> None:
    """Rounds do not grow with the number of nodes: a 1000-unit graph gets at most MAX_ROUNDS trials."""
    assert fallback.schedule(1) == [] and fallback.schedule(2) == [1] and fallback.schedule(3) == [1, 2]
    sizes = fallback.schedule(1000)
    assert len(sizes) <= fallback.GEOMETRIC_ROUNDS and sizes[0] == 1 and sizes[-1] == 500
    suspects = [fallback.Suspect(f"n{i}", "MatMul", 1.0 / (i + 1)) for i in range(1000)]
    calls: list[int] = []

    def trial(names: list[str]) -> tuple[Path, dict[str, float]]:
        calls.append(len(names))
        return Path(f"t{len(names)}"), {"cosine": 0.98 + 0.02 * min(len(names), 137) / 137}

    outcome = fallback.search(suspects, trial, FidelityTarget(min_cosine=0.995))
    assert outcome.met and len(calls) <= fallback.MAX_ROUNDS
    assert len(outcome.kept) == min(c for c in calls if 0.98 + 0.02 * min(c, 137) / 137 >= 0.995)


@pytest.mark.slow
def test_int4_raises_the_noisiest_layers_to_int8_when_the_bar_needs_it(builds: _Builds, tmp_path: Path) -> None:
    from edgekit.backends.onnx.int4 import int4_weight_only

    built = builds("gru", "fp32")  # two GRU layers big enough for int4 (the head stays int8: it is small)
    job, fp32 = built.job, built.candidates[0].path
    _, lenient = int4_weight_only(fp32, tmp_path / "lenient.onnx", job.calibration, job.reference,
                                  FidelityTarget(min_cosine=0.5))
    assert lenient["raised_to_int8"] == [] and "search" not in lenient
    # A bar just above all-int4 fidelity: reachable only by raising a layer (raising either of the two
    # removes about half the int4 noise, ~3 dB).
    bar = FidelityTarget(min_sqnr_db=lenient["metrics"]["sqnr_db"] + 0.5)
    _, record = int4_weight_only(fp32, tmp_path / "mixed.onnx", job.calibration, job.reference, bar)
    outcome = record["search"]["outcome"]
    assert outcome.met and record["raised_to_int8"] and outcome.rounds <= fallback.MAX_ROUNDS
    assert record["metrics"]["sqnr_db"] >= bar.min_sqnr_db
    census = weight_census(onnx.load(str(tmp_path / "mixed.onnx")))
    assert census["by_precision"].get("int8", 0) > 0 and census["by_precision"].get("int4", 0) > 0
    # Impossible bars leave the all-int4 model: raising layers would cost size and still fail.
    _, hopeless = int4_weight_only(fp32, tmp_path / "hopeless.onnx", job.calibration, job.reference,
                                   FidelityTarget(min_cosine=1.1))
    assert hopeless["raised_to_int8"] == [] and not hopeless["search"]["outcome"].met
    assert (tmp_path / "hopeless.onnx").stat().st_size == (tmp_path / "lenient.onnx").stat().st_size


# ----------------------------------------------------------------- int4 lookups, recurrent weights


def test_int4_quantizes_embedding_gathers(builds: _Builds) -> None:
    built = builds("bag", "int4")
    (int4,) = built.candidates
    graph = onnx.load(str(int4.path)).graph
    lookups = [n for n in graph.node if n.op_type == "GatherBlockQuantized"]
    assert lookups and not any(n.op_type == "Gather" and n.input[0].startswith("embed") for n in graph.node)
    census = int4.details["weights"]
    assert census["by_op"]["GatherBlockQuantized"] == {"int4": 600 * 64}
    assert int4.details["coverage"]["weights_share"] >= 0.98
    fp32_size = (built.job.workdir / "m.fp32.onnx").stat().st_size
    assert int4.size_bytes < 0.2 * fp32_size  # 4 bits + one fp32 scale per 128 codes, head included
    assert _cosine(built, int4) > 0.97


@pytest.mark.slow
def test_gru_weights_are_quantized_in_every_int8_and_int4_candidate(builds: _Builds) -> None:
    for precision, stored in (("int8", "int8"), ("int4", "int4")):
        built = builds("gru", precision)
        for artifact in built.candidates:
            gru = artifact.details["weights"]["by_op"]["GRU"]
            assert gru.get(stored, 0) >= 0.9 * sum(gru.values()), (artifact.variant, gru)  # W and R; biases stay float
            assert artifact.details["coverage"]["weights_share"] >= 0.9, artifact.variant
            assert _cosine(built, artifact) > (0.99 if precision == "int8" else 0.97), artifact.variant
    fp32_size = (builds("gru", "int8").job.workdir / "m.fp32.onnx").stat().st_size
    assert min(a.size_bytes for a in builds("gru", "int8").candidates) < 0.4 * fp32_size


# ----------------------------------------------------------------- coverage


def test_coverage_numbers_are_honest(builds: _Builds) -> None:
    candidates = {a.variant: a for a in builds("cnn", "int8").candidates}
    for artifact in candidates.values():
        cov = artifact.details["coverage"]
        census = artifact.details["weights"]
        assert cov["weights_by_precision"] == census["by_precision"]
        int_share = sum(n for p, n in census["by_precision"].items() if p in ("int8", "int4")) / census["parameters"]
        assert cov["weights_share"] == pytest.approx(int_share, abs=1e-6)
        assert all(op["reason"] for op in cov["float_ops"])
        floats = sum(n for p, n in census["by_precision"].items() if p.startswith("fp"))
        assert sum(op["elements"] for op in cov["float_ops"]) == floats
        # Measured on the graph onnxruntime runs: the CNN has two convs and one linear layer.
        assert cov["compute_ops"] == 3, artifact.variant
    assert candidates["weight-only-int8"].details["coverage"]["fast_ops"] == 0  # float compute by design
    assert candidates["qoperator-static-u8s8"].details["coverage"]["fast_ops"] == 3
    # Dynamic leaves convs to int8 storage with float compute (ConvInteger is slow): only the head is integer.
    assert candidates["dynamic"].details["coverage"]["fast_ops"] == 1
    assert candidates["dynamic"].details["weights"]["by_op"]["Conv"].get("int8", 0) > 0


def test_compute_op_counting_on_hand_made_op_lists() -> None:
    ops = [("QLinearConv", False), ("MatMul", False), ("Gather", True), ("Gather", False), ("Relu", False),
           ("MatMulNBits", False), ("GatherBlockQuantized", True), ("GRU", False)]
    assert coverage.count_compute(ops) == (6, 3)


# ----------------------------------------------------------------- fixed batch, FP16


def test_fixed_batch_model_exports_at_its_batch_and_runs_in_chunks(tmp_path: Path) -> None:
    from edgekit.model import load_file

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = np.random.default_rng(0).random((60, 1, 6, 6), dtype=np.float32)
    torch.export.save(torch.export.export(module, (torch.from_numpy(x[:1]),)), str(tmp_path / "fixed.pt2"))
    loaded = load_file(tmp_path / "fixed.pt2")
    assert loaded.fixed_batch == 1
    (tmp_path / "work").mkdir()
    job, evaluation = make_job(loaded.module, {"x": x}, ("y",), tmp_path / "work", "int8", True, loaded.fixed_batch)
    candidates = onnx_build.build(job)  # calibration, fidelity checks, search and timing all feed batch 1
    assert {a.variant for a in candidates} >= {"qdq-static-u8s8", "dynamic", "weight-only-int8"}
    reference = _torch_outputs(module, evaluation)[0]  # the eager module takes any batch
    for artifact in candidates:
        session = open_session(artifact.path)
        assert session.inputs[0].shape[0] == 1 and session.fixed_batch == 1
        out = session.run(evaluation)[0]  # 12 samples, fed one at a time
        assert out.shape == reference.shape and np.abs(out - reference).max() < 0.1
        assert "error" not in artifact.details["vs_fp32"]


def test_calibration_batches_of_a_fixed_batch_model_are_padded() -> None:
    feeds = {"x": np.arange(10, dtype=np.float32)[:, None]}
    chunks = quantize.batches(feeds, 4, fixed_batch=3)
    assert [len(c["x"]) for c in chunks] == [3, 3, 3, 3]
    assert chunks[-1]["x"].ravel().tolist() == [9, 9, 9]  # the last sample repeated
    assert [len(c["x"]) for c in quantize.batches(feeds, 4)] == [4, 4, 2]
    reader = quantize.Reader(feeds, fixed_batch=3)
    assert len(reader) == 4 and reader.get_next()["x"].shape == (3, 1)


def test_fp16_passes_the_onnx_checker(builds: _Builds) -> None:
    (fp16,) = builds("cnn", "fp16").candidates
    model = onnx.load(str(fp16.path))
    onnx.checker.check_model(model, full_check=True)
    seen = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # every input is produced before it is read
        assert all(not name or name in seen for name in node.input), node.name
        seen.update(node.output)


def test_the_checker_names_what_is_wrong_with_an_unsorted_graph(builds: _Builds, tmp_path: Path) -> None:
    (fp32,) = builds("cnn", "fp32").candidates
    model = onnx.load(str(fp32.path))
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))  # what onnxruntime's float16 converter does to its input Casts
    unsorted = tmp_path / "unsorted.onnx"
    onnx.save(model, str(unsorted))
    assert "topologically sorted" in (graph.checker_problem(unsorted) or "")
    assert graph.checker_problem(fp32.path) is None


# ----------------------------------------------------------------- inspect, bad files


def test_inspect_reports_io_ops_and_quantization(builds: _Builds) -> None:
    artifact = builds("cnn", "int8").candidates[0]
    report = inspect(artifact.path)
    assert report["format"] == "onnx" and report["quantized"]
    assert report["inputs"][0]["shape"][1:] == [1, 8, 8]
    assert report["outputs"][0]["name"] == "logits"
    assert report["parameters"] > 0 and sum(report["ops"].values()) > 0


def test_corrupt_onnx_is_refused_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ArtifactError):
        open_session(path)
    with pytest.raises(ArtifactError):
        inspect(path)


def test_the_fp32_program_is_held_to_the_fp32_model_and_others_are_not(builds: _Builds) -> None:
    from edgekit.config import Budgets
    from edgekit.validate import check_budgets

    (artifact,) = builds("cnn", "fp32").candidates
    assert artifact.details["float_agreement"] == "fp32"
    drifted = {"max_abs_error_scaled": 0.5, "cosine": 0.99}  # what a float program must never do
    checks = {c.budget: c for c in check_budgets(drifted, Budgets(), 1, artifact.facts, device_measured=False,
                                                 device_name="d")}
    assert checks["float_agreement"].status == "fail"
    for other in ("fp16", "int8"):
        assert all("float_agreement" not in a.details for a in builds("cnn", other).candidates)
