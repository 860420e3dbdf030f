"""`edgekit build --auto`: real builds that search precisions and compressed variants per target."""

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.config import load_build_config
from edgekit.errors import InputError
from edgekit.pipeline import Build, resolve_inputs
from edgekit.release.schema import validate_manifest


def _config(model_files, folder: Path, extra: str, artifacts: str = "") -> Path:
    with np.load(model_files.data) as archive:
        np.savez(folder / "train.npz", x=archive["x"], y=archive["y"])
    config_file = folder / "edgekit.toml"
    config_file.write_text(
        f'[model]\nname = "tiny"\nfactory = "{model_files.factory}"\nweights = "{model_files.weights}"\n'
        f'[data]\npath = "{model_files.data}"\ntrain = "train.npz"\ncalibration_size = 32\n'
        '[build]\ntargets = ["raspberry-pi-4"]\noutput = "out"\nlatency_runs = 5\n' + artifacts + extra
    )
    return config_file


ONNX_ONLY = '[[overrides.raspberry-pi-4.artifacts]]\nformat = "onnx"\nprecision = "int8"\n'


def _search_record(out: Path, artifact: dict) -> dict:
    return json.loads((out / artifact["report"]).read_text())["search"]


@pytest.mark.slow
def test_auto_ships_one_artifact_per_format_chosen_from_every_precision(tiny_cnn, tmp_path: Path) -> None:
    config = load_build_config(_config(tiny_cnn, tmp_path, '[search]\nprecisions = ["fp32", "int8", "int4"]\n'))
    result = Build(resolve_inputs(config, [], None, None, auto=True)).run()
    manifest = result.manifest
    validate_manifest(manifest)  # the search summary is part of the schema
    assert sorted(a["format"] for a in manifest["artifacts"]) == ["onnx", "tflite"]  # one per format, not per request
    for artifact in manifest["artifacts"]:
        record = _search_record(result.output, artifact)
        rows = record["candidates"]
        assert {r["precision"] for r in rows} == {"fp32", "int8", "int4"}
        assert all(r["model"] == "model" for r in rows) and not artifact.get("model_variant")
        passing = [r for r in rows if r["passed"]]
        not_slower = [r for r in passing if r.get("latency_vs_fp32", 0.0) <= 1.03] or passing
        chosen = next(r for r in rows if r["candidate"] == record["chosen"])
        # the smallest candidate that meets every budget (and is not slower than FP32) shipped, and the file is it
        assert chosen["size_bytes"] == min(r["size_bytes"] for r in not_slower)
        assert artifact["size_bytes"] == chosen["size_bytes"] and artifact["precision"] == chosen["precision"]
        assert artifact["search"]["candidates"] == len(rows) >= 3
        assert any(r["pareto"] for r in rows) and all(r["download_bytes"] > 0 for r in rows)
    html = (result.output / "report.html").read_text()
    assert "onnx search: shipped" in html and "tflite search: shipped" in html
    assert html.count("data:image/png;base64") >= 4  # two overview charts + one Pareto plot per search


def test_auto_tries_pruned_variants_and_records_the_compression_it_ships(tiny_cnn, tmp_path: Path) -> None:
    config = load_build_config(_config(
        tiny_cnn, tmp_path,
        '[search]\nprecisions = ["int8"]\nsparsity = [0.6]\nmacs_ratio = [0.001]\nobjective = "download"\n'
        '[search.train]\nepochs = 2\n'
        '[budgets]\nmax_accuracy_drop = 1.0\n',  # a budget every variant meets, so the objective alone decides
        ONNX_ONLY))
    result = Build(resolve_inputs(config, [], None, None, auto=True)).run()
    (artifact,) = result.manifest["artifacts"]
    validate_manifest(result.manifest)
    record = _search_record(result.output, artifact)
    rows = {(r["model"], r["recipe"]): r for r in record["candidates"]}
    assert {model for model, _ in rows} == {"model", "pruned-s0.6"}
    for (model, recipe), row in rows.items():
        if model == "pruned-s0.6":  # zeros gzip away: the same recipe downloads smaller once pruned
            assert row["download_bytes"] < rows[("model", recipe)]["download_bytes"]
    # a MACs target no channel ratio reaches is left out with its reason; the search goes on
    (excluded,) = record["excluded"]
    assert excluded["candidate"] == "pruned-m0.001" and excluded["reason"]
    assert artifact["model_variant"] == "pruned-s0.6"
    assert ".pruned-s0.6." in artifact["path"]  # the file name says it is the pruned model, not the one given
    assert [stage["stage"] for stage in artifact["compression"]] == ["prune"]
    assert artifact["compression"][0]["after"]["weight_sparsity"] == pytest.approx(0.6, abs=0.02)


def test_a_search_with_variants_needs_training_data_before_any_work(tiny_cnn, tmp_path: Path) -> None:
    config_file = _config(tiny_cnn, tmp_path, "[search]\nwidth = [0.5]\n")
    config_file.write_text(config_file.read_text().replace('train = "train.npz"\n', ""))
    with pytest.raises(InputError) as err:
        resolve_inputs(load_build_config(config_file), [], None, None, auto=True)
    assert "training data" in err.value.message and "raspberry-pi-4" in err.value.message
