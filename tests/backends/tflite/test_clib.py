"""The microcontroller C/C++ library: compiled with the system C++ compiler and checked against the .tflite.

The array and settings header are compiled (they need only the standard
library) into a small program that writes the array back to a file and prints
the header's constants; those are compared with the model file, with LiteRT's
own reading of the model, and with TFLite Micro's arena measurement.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.backends.tflite import clib, micro
from edgekit.errors import ArtifactError, InputError, UnsupportedModelError

# Tests run with --import-mode=importlib, which does not put this folder on sys.path;
# the shared tiny models live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
from tflite_testing_models import built, by_variant  # noqa: E402

pytestmark = pytest.mark.slow
needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to compile the library with")
# Real values the compiled Quantize<> is checked on: inside the range, negative, and far outside it.
QUANTIZE_PROBES = (0.0, 0.3, -0.7, 1.9, -1e9, 1e9)


def _mcu_cnn() -> Path:
    """A full-integer CNN (int8 I/O) built for a microcontroller target: CONV_2D, DEPTHWISE_CONV_2D, ..."""
    return by_variant(built("cnn", "int8", io="int8", kind="microcontroller"))["pt2e-static"].path


def _float_mlp() -> Path:
    """A float32 MLP (FULLY_CONNECTED, TANH, RELU): the library's non-quantized path."""
    return built("mlp", "fp32")[0].path


def _litert_details(path: Path) -> tuple[list[dict], list[dict], list[str]]:
    """Inputs, outputs and op names as LiteRT's interpreter reads them (an independent parser)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    return interpreter.get_input_details(), interpreter.get_output_details(), ops


def _probe_program(library: clib.CLibrary, inputs: int, outputs: int) -> str:
    """C++ that writes the array to argv[1] and prints the library's constants, one fact per line."""
    ns, array = library.name, library.array
    lines = [
        "#include <cstdint>", "#include <cstdio>", f'#include "{ns}_data.h"', f'#include "{ns}_settings.h"',
        "int main(int argc, char** argv) {",
        "  if (argc != 2) return 2;",
        "  std::FILE* out = std::fopen(argv[1], \"wb\");",
        f"  if (out == nullptr || std::fwrite({array}, 1, {array}_len, out) != {array}_len) return 3;",
        "  std::fclose(out);",
        f"  std::printf(\"len %u\\n\", {array}_len);",
        f"  std::printf(\"aligned16 %d\\n\", static_cast<int>(reinterpret_cast<std::uintptr_t>({array}) % 16 == 0));",
        f"  std::printf(\"arena %d\\n\", {ns}::kTensorArenaSize);",
        f"  std::printf(\"counts %d %d\\n\", {ns}::kInputCount, {ns}::kOutputCount);",
    ]
    for struct in [f"Input{k}" for k in range(inputs)] + [f"Output{k}" for k in range(outputs)]:
        t = f"{ns}::{struct}"
        lines += [
            f"  std::printf(\"{struct} %s %d %.9g %d %d %d\\n\", {t}::kName, static_cast<int>({t}::kQuantized), "
            f"static_cast<double>({t}::kScale), static_cast<int>({t}::kZeroPoint), {t}::kElementCount, "
            f"static_cast<int>(sizeof({t}::Type)));",
            f"  std::printf(\"{struct}.shape\");",
            f"  for (int i = 0; i < {t}::kRank; ++i) std::printf(\" %d\", {t}::kShape[i]);",
            "  std::printf(\"\\n\");",
        ]
    for value in QUANTIZE_PROBES:
        lines.append(f"  std::printf(\"quantize %.9g\\n\", static_cast<double>({ns}::Quantize<{ns}::Input0>({value!r}f)));")
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


def _compile_and_run(library: clib.CLibrary, inputs: int, outputs: int, tmp_path: Path) -> tuple[bytes, list[str]]:
    """Compile the array .cc + headers with a probe program (warnings are errors), run it: (bytes, stdout lines)."""
    probe = tmp_path / "probe.cc"
    probe.write_text(_probe_program(library, inputs, outputs))
    binary = tmp_path / "probe"
    (source,) = [p for p in library.files if p.name.endswith("_data.cc")]
    compiled = subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{library.folder}",
         str(probe), str(source), "-o", str(binary)], capture_output=True, text=True,
    )
    assert compiled.returncode == 0, compiled.stderr
    written = tmp_path / "roundtrip.bin"
    ran = subprocess.run([str(binary), str(written)], capture_output=True, text=True, check=True)
    return written.read_bytes(), ran.stdout.splitlines()


def _facts(lines: list[str]) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in lines if not line.startswith("quantize")}


@needs_compiler
def test_array_and_header_compile_and_give_back_the_model(tmp_path: Path) -> None:
    model = _mcu_cnn()
    data = model.read_bytes()
    library = clib.write_c_library(model, tmp_path / "lib", "cnn", target="test-mcu")
    assert [p.name for p in library.files] == ["cnn_data.h", "cnn_data.cc", "cnn_settings.h", "cnn_op_resolver.h",
                                               "main.cc"]
    assert all(p.is_file() for p in library.files)

    written, lines = _compile_and_run(library, 1, 1, tmp_path)
    facts = _facts(lines)
    assert written == data
    assert facts["len"] == [str(len(data))]
    assert facts["aligned16"] == ["1"]
    # The arena is micro.check's measurement (TFLM when installed), not a second estimate.
    expected_arena = micro.check(data, "test-mcu")["arena_bytes"]
    assert int(facts["arena"][0]) == -(-expected_arena // 16) * 16 == library.arena_bytes
    assert facts["counts"] == ["1", "1"]

    inputs, outputs, _ = _litert_details(model)
    for struct, detail in (("Input0", inputs[0]), ("Output0", outputs[0])):
        _, quantized, scale, zero_point, elements, size = facts[struct]
        q = detail["quantization_parameters"]
        assert quantized == "1"
        assert np.float32(float(scale)) == q["scales"][0]  # exact: 9 significant digits round-trip a float32
        assert int(zero_point) == int(q["zero_points"][0])
        assert [int(d) for d in facts[f"{struct}.shape"]] == [int(d) for d in detail["shape"]]
        assert int(elements) == int(np.prod(detail["shape"])) and int(size) == np.dtype(detail["dtype"]).itemsize

    # Quantize<> agrees with quantizing in numpy (round, add the zero point, clamp to int8).
    scale, zero_point = inputs[0]["quantization_parameters"]["scales"][0], inputs[0]["quantization_parameters"]["zero_points"][0]
    got = [int(float(line.split()[1])) for line in lines if line.startswith("quantize")]
    want = [int(np.clip(np.round(np.float32(v) / scale) + zero_point, -128, 127)) for v in QUANTIZE_PROBES]
    assert got == want


@needs_compiler
def test_float_model_library_compiles_with_unquantized_tensors(tmp_path: Path) -> None:
    model = _float_mlp()
    library = clib.write_c_library(model, tmp_path / "lib", "mlp", arena_bytes=1000, arena_method="given")
    written, lines = _compile_and_run(library, 1, 1, tmp_path)
    facts = _facts(lines)
    assert written == model.read_bytes()
    assert facts["arena"] == ["1008"]  # rounded up to TFLM's 16-byte allocation step
    assert facts["Input0"][1:3] == ["0", "0"] and facts["Input0"][5] == "4"  # not quantized, float
    quantized = [np.float32(line.split()[1]) for line in lines if line.startswith("quantize")]
    assert quantized == [np.float32(v) for v in QUANTIZE_PROBES]  # passed through as is
    assert "given" in (tmp_path / "lib" / "mlp_settings.h").read_text()


def test_resolver_registers_exactly_the_ops_in_the_flatbuffer(tmp_path: Path) -> None:
    model = _mcu_cnn()
    library = clib.write_c_library(model, tmp_path, "cnn", arena_bytes=4096)
    header = (tmp_path / "cnn_op_resolver.h").read_text()
    calls = re.findall(r"resolver\.(Add\w+)\(\)", header)
    (count,) = re.findall(r"MicroMutableOpResolver<(\d+)>", header)

    _, _, litert_ops = _litert_details(model)
    distinct = list(dict.fromkeys(litert_ops))
    assert int(count) == len(distinct) == len(calls) == len(set(calls))
    assert calls == [clib.RESOLVER_METHODS[op] for op in distinct]
    assert set(calls) == {"AddReshape", "AddDepthwiseConv2D", "AddMaxPool2D", "AddConv2D", "AddTranspose",
                          "AddFullyConnected"}
    assert list(library.ops) == distinct and list(library.resolver_methods) == calls
    main = (tmp_path / "main.cc").read_text()
    for needed in ('#include "cnn_op_resolver.h"', "RegisterOps(resolver)", "tflite::GetModel(g_cnn)",
                   "interpreter.Invoke()", "alignas(16) uint8_t tensor_arena[cnn::kTensorArenaSize]"):
        assert needed in main


def test_resolver_method_names_follow_tflite_micro() -> None:
    # Spellings from tensorflow/lite/micro/micro_mutable_op_resolver.h that no naming rule would give.
    expected = {
        "FULLY_CONNECTED": "AddFullyConnected", "CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
        "RESHAPE": "AddReshape", "SOFTMAX": "AddSoftmax", "QUANTIZE": "AddQuantize", "DEQUANTIZE": "AddDequantize",
        "MAX_POOL_2D": "AddMaxPool2D", "AVERAGE_POOL_2D": "AddAveragePool2D", "MEAN": "AddMean",
        "LOGISTIC": "AddLogistic", "TANH": "AddTanh", "RELU": "AddRelu", "ADD": "AddAdd", "MUL": "AddMul",
        "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "SVDF": "AddSvdf", "L2_POOL_2D": "AddL2Pool2D",
        "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "PADV2": "AddPadV2",
        "CUSTOM:TFLite_Detection_PostProcess": "AddDetectionPostprocess",
    }
    assert {op: clib.RESOLVER_METHODS[op] for op in expected} == expected
    # Every op the op-set check accepts has a kernel to register (detection post-processing is a custom op
    # in flatbuffers, listed above under its custom code).
    assert set(micro.TFLM_OPS) - {"DETECTION_POSTPROCESS"} <= set(clib.RESOLVER_METHODS)


def test_an_op_without_a_tflite_micro_kernel_is_refused_by_name(tmp_path: Path) -> None:
    gelu = built("gelu", "fp32")[0].path
    out = tmp_path / "lib"
    with pytest.raises(UnsupportedModelError, match=r"GELU has no TFLite Micro kernel.*target 'test-mcu'"):
        clib.write_c_library(gelu, out, "gelu", arena_bytes=4096, target="test-mcu")
    assert not out.exists()  # checked before anything is written


def test_a_file_that_is_not_a_tflite_model_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.tflite"
    bogus.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(ArtifactError, match="not a TFLite model"):
        clib.write_c_library(bogus, tmp_path / "lib", "notes", arena_bytes=4096)
    with pytest.raises(ArtifactError, match="cannot read"):
        clib.write_c_library(tmp_path / "missing.tflite", tmp_path / "lib", "missing", arena_bytes=4096)
    assert not (tmp_path / "lib").exists()


def test_names_must_be_c_identifiers(tmp_path: Path) -> None:
    for bad in ("1model", "my-model", "class", "namespace", "", "a" * 80):
        with pytest.raises(InputError, match="cannot name a C/C\\+\\+ library"):
            clib.check_name(bad)
    assert clib.default_name(Path("cnn.pt2e-static.tflite")) == "cnn_pt2e_static"
    assert clib.default_name(Path("2024 Model.tflite")) == "model_2024_model"
    assert clib.default_name(Path("class.tflite")) == "class_model"
    for made in ("cnn_pt2e_static", "model_2024_model", "class_model"):
        assert clib.check_name(made) == made


def test_export_c_command_end_to_end(tmp_path: Path, cli) -> None:
    from edgekit.cli import cli as group

    model = tmp_path / "kws.int8.tflite"
    shutil.copyfile(_mcu_cnn(), model)
    result = CliRunner().invoke(group, ["export-c", str(model), "--out", str(tmp_path / "lib"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["name"] == "kws_int8" and report["array"] == "g_kws_int8"
    assert report["files"] == ["kws_int8_data.h", "kws_int8_data.cc", "kws_int8_settings.h",
                               "kws_int8_op_resolver.h", "main.cc"]
    assert report["arena_bytes"] > 0 and "FULLY_CONNECTED" in report["ops"]
    assert "kws_int8::kTensorArenaSize" in (tmp_path / "lib" / "main.cc").read_text()

    named = CliRunner().invoke(group, ["export-c", str(model), "--out", str(tmp_path / "named"), "--name", "kws",
                                       "--arena-bytes", "5000"])
    assert named.exit_code == 0, named.output
    assert "constexpr int kTensorArenaSize = 5008;" in (tmp_path / "named" / "kws_settings.h").read_text()

    # Bad input through the real entry point: a clear message and exit code 2, no traceback.
    refused = cli("export-c", built("gelu", "fp32")[0].path, "--out", tmp_path / "gelu")
    assert refused.code == 2 and "GELU has no TFLite Micro kernel" in refused.err and "Traceback" not in refused.err
    bad_name = cli("export-c", model, "--out", tmp_path / "x", "--name", "my-model")
    assert bad_name.code == 2 and "cannot name a C/C++ library" in bad_name.err
