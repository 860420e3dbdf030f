"""`edgekit build` / `validate` / `inspect` end to end through the real entry point."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgekit.artifact import sha256_file


@pytest.fixture(scope="module")
def built(tiny_cnn, tmp_path_factory):
    """One real build of the tiny CNN for the ONNX-only profile, shared by the tests below."""
    from edgekit.cli import main

    out = tmp_path_factory.mktemp("build")
    try:
        main(["build", tiny_cnn.factory, "--weights", str(tiny_cnn.weights), "--data", str(tiny_cnn.data),
              "-t", "jetson-orin-nano", "-o", str(out), "--json"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return out, code


def test_build_writes_validated_artifacts_for_every_onnx_precision(built) -> None:
    out, code = built
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {a["precision"] for a in manifest["artifacts"]} == {"fp32", "fp16", "int8", "int4"}
    by_precision = {a["precision"]: a for a in manifest["artifacts"]}
    for artifact in manifest["artifacts"]:
        path = out / artifact["path"]
        assert path.is_file()
        assert sha256_file(path) == artifact["sha256"]
        assert path.stat().st_size == artifact["size_bytes"]
        assert artifact["metrics"]["latency_p50_ms"] > 0
        assert artifact["metrics"]["accuracy"] >= 0.9  # labels are the FP32 model's own predictions
        report = json.loads((out / artifact["report"]).read_text())
        assert report["selection"]["chosen"] == f"model/{artifact['precision']}/{artifact['variant']}"
        assert report["details"]["weights"]["parameters"] > 0
    assert by_precision["int4"]["size_bytes"] < by_precision["int8"]["size_bytes"] < by_precision["fp32"]["size_bytes"]
    assert by_precision["int8"]["weights"]["by_precision"]["int8"] > 0
    assert manifest["reference"]["accuracy"] == 1.0
    assert manifest["data"]["split_sha256"] and manifest["model"]["source_sha256"]
    # the device's latency is not the host's: budget checks say so rather than pass
    latency = [c for c in by_precision["fp32"]["checks"] if c["budget"] == "max_latency_ms"][0]
    assert latency["status"] == "skipped" and "edgekit validate" in latency["note"]
    assert not (out / ".work").exists()


def test_inspect_json_on_a_built_artifact(built, cli) -> None:
    out, _ = built
    result = cli("inspect", out / "jetson-orin-nano" / "create.int8.onnx", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["quantized"] and report["weights"]["by_precision"]["int8"] > 0


def test_validate_against_a_reference_and_a_target(built, tiny_cnn, cli) -> None:
    out, _ = built
    folder = out / "jetson-orin-nano"
    result = cli("validate", folder / "create.int8.onnx", "--data", tiny_cnn.data,
                 "--reference", folder / "create.fp32.onnx", "-t", "jetson-orin-nano", "--json", "--runs", "5")
    assert result.code in (0, 1), result.err
    report = json.loads(result.out)
    assert report["metrics"]["cosine"] > 0.99
    checks = {c["budget"]: c for c in report["checks"]}
    assert checks["max_size_mb"]["status"] == "pass"
    # this host is not an aarch64 Jetson: its latency and RAM are not the device's, so they are not judged
    assert not report["measured_on_device"]
    assert checks["max_latency_ms"]["status"] == "skipped" and "jetson-orin-nano" in checks["max_latency_ms"]["note"]
    assert checks["max_ram_mb"]["status"] == "skipped"


def test_validate_judges_latency_on_a_host_with_the_device_arch(built, tiny_cnn, cli, tmp_path: Path) -> None:
    import platform

    profile = tmp_path / "this-host.toml"
    profile.write_text(f'name = "this-host"\ndescription = "d"\n[device]\nkind = "sbc"\narch = "{platform.machine()}"\n'
                       'cores = 1\nram_mb = 64\n[[artifacts]]\nformat = "onnx"\nprecision = "int8"\n'
                       '[budgets]\nmax_latency_ms = 0.000001\n')
    result = cli("validate", built[0] / "jetson-orin-nano" / "create.int8.onnx", "--data", tiny_cnn.data,
                 "-t", profile, "--json", "--runs", "3")
    checks = {c["budget"]: c for c in json.loads(result.out)["checks"]}
    assert checks["max_latency_ms"]["status"] == "fail" and result.code == 1


def test_validate_reads_the_details_the_build_recorded_beside_the_artifact(built, tiny_cnn, cli, tmp_path: Path) -> None:
    import shutil

    folder = built[0] / "jetson-orin-nano"
    low = tmp_path / "create.int4.onnx"
    shutil.copy(folder / "create.int4.onnx", low)
    args = ("validate", low, "--data", tiny_cnn.data, "--reference", folder / "create.fp32.onnx",
            "-t", "jetson-orin-nano", "--json", "--runs", "3")
    alone = json.loads(cli(*args).out)
    assert "float_agreement" not in {c["budget"] for c in alone["checks"]}  # nothing says what it should match
    # a report declaring it a plain FP32 program: INT4 weights cannot agree within 1e-4, and the check says so
    (tmp_path / "create.int4.onnx.report.json").write_text(json.dumps({"details": {"float_agreement": "fp32"}}))
    result = cli(*args)
    checks = {c["budget"]: c for c in json.loads(result.out)["checks"]}
    assert checks["float_agreement"]["status"] == "fail" and result.code == 1


def test_budget_failure_exits_1(tiny_cnn, tmp_path: Path, cli) -> None:
    profile = tmp_path / "tiny.toml"
    profile.write_text(
        'name = "tiny-device"\ndescription = "a device with almost no storage"\n'
        '[device]\nkind = "sbc"\narch = "aarch64"\ncores = 1\nram_mb = 64\n'
        '[[artifacts]]\nformat = "onnx"\nprecision = "fp32"\n[budgets]\nmax_size_mb = 0.001\n'
    )
    result = cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", tiny_cnn.data,
                 "-t", profile, "-o", tmp_path / "out")
    assert result.code == 1
    assert "budget" in result.err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["artifacts"][0]["passed"] is False


def test_a_format_whose_converter_is_missing_is_skipped_and_the_rest_builds(tiny_cnn, tmp_path: Path, cli,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # as on a machine without coremltools: the Core ML build modules re-import and find it missing
    for name in [n for n in sys.modules if n.startswith("edgekit.backends.coreml.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "coremltools", None)
    profile = tmp_path / "phone.toml"
    profile.write_text('name = "phone"\ndescription = "d"\nartifacts = [{format = "onnx", precision = "fp32"}, '
                       '{format = "coreml", precision = "fp16"}]\n'
                       '[device]\nkind = "phone"\narch = "arm64"\ncores = 4\nram_mb = 4096\nmin_ios = "17"\n')
    result = cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", tiny_cnn.data,
                 "-t", profile, "-o", tmp_path / "out", "--json")
    manifest = json.loads(result.out)
    assert result.code == 0, manifest["targets"]
    assert [a["format"] for a in manifest["artifacts"]] == ["onnx"]
    (message,) = [m for m in manifest["targets"][0]["messages"] if m.startswith("coreml-fp16")]
    assert "skipped" in message and "coremltools" in message and 'pip install "edgekit[' in message


# ------------------------------------------------------------------ bad input: exit 2, one line, no traceback

def _assert_clean_error(result, *fragments: str) -> None:
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for fragment in fragments:
        assert fragment in result.err, result.err


def test_missing_model_file(tiny_cnn, tmp_path: Path, cli) -> None:
    _assert_clean_error(cli("build", tmp_path / "nope.pt2", "--data", tiny_cnn.data, "-t", "jetson-orin-nano",
                            "-o", tmp_path / "o"), "not found")


def test_corrupt_model_file(tiny_cnn, tmp_path: Path, cli) -> None:
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(os.urandom(256))
    _assert_clean_error(cli("build", bad, "--data", tiny_cnn.data, "-t", "jetson-orin-nano", "-o", tmp_path / "o"),
                        "not a model file")


def test_weights_that_do_not_match(tiny_cnn, tmp_path: Path, cli) -> None:
    import torch

    wrong = tmp_path / "wrong.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, wrong)
    _assert_clean_error(cli("build", tiny_cnn.factory, "--weights", wrong, "--data", tiny_cnn.data,
                            "-t", "jetson-orin-nano", "-o", tmp_path / "o"), "do not match")


def test_data_without_x(tiny_cnn, tmp_path: Path, cli) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, images=np.zeros((8, 1, 8, 8), np.float32))
    _assert_clean_error(cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", data,
                            "-t", "jetson-orin-nano", "-o", tmp_path / "o"), "'images'", "'x'")


def test_data_of_the_wrong_shape(tiny_cnn, tmp_path: Path, cli) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((8, 3, 5, 5), np.float32))
    _assert_clean_error(cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", data,
                            "-t", "jetson-orin-nano", "-o", tmp_path / "o"), "does not fit the model", "(3, 5, 5)")


def test_unknown_target_suggests(tiny_cnn, tmp_path: Path, cli) -> None:
    _assert_clean_error(cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", tiny_cnn.data,
                            "-t", "jetson-orin", "-o", tmp_path / "o"), "jetson-orin-nano")


def test_profile_with_a_typo(tiny_cnn, tmp_path: Path, cli) -> None:
    profile = tmp_path / "typo.toml"
    profile.write_text('name = "x"\ndescription = "d"\n[device]\nkind = "sbc"\narch = "a"\ncores = 1\nram_mb = 1\n'
                       '[[artifacts]]\nformat = "onnx"\nprecision = "fp32"\nprecison = "int8"\n')
    _assert_clean_error(cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", tiny_cnn.data,
                            "-t", profile, "-o", tmp_path / "o"), "artifacts.0.precison", str(profile))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder_as_user(tiny_cnn, tmp_path: Path, cli) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _assert_clean_error(cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", tiny_cnn.data,
                            "-t", "jetson-orin-nano", "-o", locked / "out"), "cannot write")


def test_output_path_that_is_a_file(tiny_cnn, tmp_path: Path, cli) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _assert_clean_error(cli("build", tiny_cnn.factory, "--weights", tiny_cnn.weights, "--data", tiny_cnn.data,
                            "-t", "jetson-orin-nano", "-o", blocker / "out"), "cannot write")


def test_pickled_model_needs_the_trust_flag(tiny_cnn, tmp_path: Path, cli) -> None:
    import torch

    from edgekit.model import load_factory

    module = load_factory(tiny_cnn.factory, tiny_cnn.weights, tmp_path).module
    path = tmp_path / "whole.pt"
    torch.save(module, path)
    _assert_clean_error(cli("build", path, "--data", tiny_cnn.data, "-t", "jetson-orin-nano", "-o", tmp_path / "o"),
                        "--trust-pickle")


def test_validate_refuses_unknown_formats(tmp_path: Path, cli) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"1234")
    _assert_clean_error(cli("validate", path, "--data", path), "not a model format")


def test_an_overlong_file_name_is_bad_input_not_a_bug(tiny_cnn, tmp_path: Path, cli) -> None:
    long_name = tmp_path / ("m" * 300 + ".pt2")
    _assert_clean_error(cli("build", long_name, "--data", tiny_cnn.data, "-t", "jetson-orin-nano", "-o", tmp_path),
                        "file name too long")
    _assert_clean_error(cli("inspect", tmp_path / ("m" * 300 + ".onnx")), "file name too long")


def test_debug_works_after_the_command_too(tmp_path: Path, cli) -> None:
    from edgekit.errors import ArtifactError

    missing = tmp_path / "missing.onnx"
    _assert_clean_error(cli("inspect", missing), "not found")
    with pytest.raises(ArtifactError, match="not found"):  # --debug shows the exception itself, wherever it is typed
        cli("inspect", missing, "--debug")
    with pytest.raises(ArtifactError, match="not found"):
        cli("--debug", "inspect", missing)


def test_a_refusal_with_json_is_json_on_stdout_too(tmp_path: Path, cli) -> None:
    missing = tmp_path / "missing.onnx"
    result = cli("inspect", missing, "--json")
    assert result.code == 2 and result.err.startswith("error: ")
    assert json.loads(result.out) == {"ok": False, "exit_code": 2, "error": result.err.strip()[len("error: "):]}
    usage = cli("validate", missing, "--json")  # --data missing: a usage error, same shape
    assert usage.code == 2 and json.loads(usage.out)["ok"] is False and "--data" in json.loads(usage.out)["error"]


def test_build_config_file_reproduces_a_build(tiny_cnn, tmp_path: Path, cli) -> None:
    config = tmp_path / "edgekit.toml"
    config.write_text(
        f'[model]\nname = "tiny"\nversion = "1.2.3"\nfactory = "{tiny_cnn.factory}"\nweights = "{tiny_cnn.weights}"\n'
        f'[data]\npath = "{tiny_cnn.data}"\ncalibration_size = 32\n'
        '[build]\ntargets = ["jetson-orin-nano"]\noutput = "out"\nlatency_runs = 5\n'
        '[[overrides.jetson-orin-nano.artifacts]]\nformat = "onnx"\nprecision = "int8"\n'
    )
    result = cli("build", config, "--json")
    assert result.code == 0, result.err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "tiny" and manifest["model"]["version"] == "1.2.3"
    assert [a["path"] for a in manifest["artifacts"]] == ["jetson-orin-nano/tiny.int8.onnx"]
    assert manifest["data"]["calibration_size"] == 32


def test_multi_input_unlabelled_model_is_judged_on_fidelity(token_encoder, tmp_path: Path, cli) -> None:
    profile = tmp_path / "fidelity.toml"
    profile.write_text(
        'name = "fidelity"\ndescription = "fidelity budgets only"\n'
        '[device]\nkind = "sbc"\narch = "aarch64"\ncores = 4\nram_mb = 1024\n'
        '[[artifacts]]\nformat = "onnx"\nprecision = "int8"\n'
        '[budgets]\nmin_cosine = 0.99\nmax_accuracy_drop = 0.01\n'
    )
    result = cli("build", token_encoder.factory, "--weights", token_encoder.weights, "--data", token_encoder.data,
                 "-t", profile, "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.err
    manifest = json.loads(result.out)
    artifact = manifest["artifacts"][0]
    assert manifest["data"]["labelled"] is False and "accuracy" not in artifact["metrics"]
    checks = {c["budget"]: c for c in artifact["checks"]}
    assert checks["min_cosine"]["status"] == "pass"
    assert checks["max_accuracy_drop"]["status"] == "skipped" and "no labels" in checks["max_accuracy_drop"]["note"]
    assert [i["dtype"] for i in manifest["model"]["inputs"]] == ["int64", "int64"]
