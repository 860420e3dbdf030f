"""The emulation package's pure parts: comparison and bounds, devices, cache folder, tools, requirements.

None of these start QEMU, so they run everywhere in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.emulation.check import precision_of
from edgekit.emulation.compare import MAX_LSB, bound_for, compare_outputs, failed
from edgekit.emulation.devices import DEVICES, device, device_for_profile
from edgekit.errors import EmulationUnavailableError, InputError


def test_float_outputs_pass_within_the_relative_bound_and_fail_beyond_it() -> None:
    host = [np.array([[1.0, -2.0, 4.0]], dtype=np.float32)]
    close = compare_outputs([host[0] * (1 + 1e-6)], host, "fp32")
    assert close["status"] == "pass" and 0 < close["max_rel_error"] < 1e-5
    far = compare_outputs([host[0] + np.float32(0.01)], host, "fp32")
    assert far["status"] == "fail" and far["max_rel_error"] == pytest.approx(0.01 / 4, rel=1e-3)
    assert far["bound"] == {"max_rel_error": 1e-4}


def test_quantized_outputs_count_steps_of_their_own_scale() -> None:
    scale = 0.05
    host = [np.arange(-5, 5, dtype=np.float32)[None] * scale]
    one_step = host[0].copy()
    one_step[0, 3] += scale
    record = compare_outputs([one_step], host, "int8", output_scales=[scale])
    assert record["max_lsb"] == pytest.approx(1.0) and record["lsb_basis"] == "output scale"
    assert record["status"] == "pass"  # one step is the documented int8 bound
    two_steps = host[0] + 2 * scale
    assert compare_outputs([two_steps], host, "int8", output_scales=[scale])["status"] == "fail"


def test_float_output_quantized_models_are_measured_in_steps_of_the_output_range() -> None:
    host = [np.linspace(0, 2.55, 10, dtype=np.float32)[None]]  # range 2.55: one step is 0.01
    record = compare_outputs([host[0] + np.float32(0.02)], host, "dynamic-int8")
    assert record["lsb_basis"] == "output range / 255"
    assert record["max_lsb"] == pytest.approx(2.0, rel=1e-3)
    assert record["status"] == ("pass" if MAX_LSB["dynamic-int8"] >= 2 else "fail")


def test_nan_on_one_side_shape_and_count_mismatches_fail() -> None:
    host = [np.array([[1.0, np.nan]], dtype=np.float32)]
    assert compare_outputs([np.array([[1.0, np.nan]], dtype=np.float32)], host, "fp32")["status"] == "pass"
    assert compare_outputs([np.array([[np.nan, np.nan]], dtype=np.float32)], host, "fp32")["status"] == "fail"
    shape = compare_outputs([np.zeros((2, 2), np.float32)], host, "fp32")
    assert shape["status"] == "fail" and "shape" in shape["message"]
    assert compare_outputs([], host, "fp32")["status"] == "fail"
    crashed = failed("int8", "the emulated Python died (signal 11)")
    assert crashed["status"] == "fail" and crashed["max_lsb"] is None and crashed["bound"] == {"max_lsb": 1.0}


def test_unknown_precisions_are_refused_with_the_known_ones() -> None:
    with pytest.raises(InputError, match="Known precisions"):
        bound_for("int3")


def test_precision_comes_from_the_report_else_the_file_name() -> None:
    assert precision_of(Path("m.fp32.onnx"), "int8") == "int8"
    assert precision_of(Path("digits.fp16.tflite"), None) == "fp16"
    assert precision_of(Path("digits.int8.io-int8.tflite"), None) == "int8"
    assert precision_of(Path("model.tflite"), None) == "int8"  # unknown: the quantized bound


def test_devices_are_found_by_short_name_or_profile_and_report_their_arm_cpu() -> None:
    assert device("pi4").qemu_cpu == "cortex-a72" and device("raspberry-pi-5").qemu_cpu == "cortex-a76"
    assert device_for_profile("raspberry-pi-4") is DEVICES["pi4"]
    assert device_for_profile("jetson-orin-nano") is None
    assert DEVICES["pi4"].validated_on == "emulated cortex-a72"
    text = DEVICES["pi5"].cpuinfo(2)
    assert text.count("processor\t:") == 2 and "CPU part\t: 0xd0b" in text and "asimddp" in text
    assert "GenuineIntel" not in text and "AuthenticAMD" not in text
    with pytest.raises(InputError, match="Emulated devices: pi4"):
        device("esp32-s3")


def test_the_cache_folder_follows_the_parameter_then_edgekit_cache(monkeypatch, tmp_path: Path) -> None:
    from edgekit.emulation.cache import cache_dir

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "ek"))
    assert cache_dir() == tmp_path / "ek" / "emulation"
    assert cache_dir(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("EDGEKIT_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == Path.home().resolve() / ".cache" / "edgekit" / "emulation"


def test_missing_tools_are_named_with_the_apt_command(monkeypatch) -> None:
    from edgekit.emulation import tools

    monkeypatch.setattr(tools, "_which", lambda program: None)
    with pytest.raises(EmulationUnavailableError) as caught:
        tools.find_tools()
    message = caught.value.message
    assert "qemu-aarch64-static" in message and "debootstrap" in message
    assert "apt-get install -y --no-install-recommends" in message and "qemu-user-static" in message
    assert "--install-tools" in message


def test_the_guest_gets_the_runtime_extra_pinned_and_no_torch() -> None:
    from edgekit.emulation.wheels import device_requirements, platform_args

    lines = ["numpy>=1.26", 'onnxruntime>=1.20; extra == "runtime"', 'torch>=2.6; extra == "onnx"',
             'edgekit[build]; extra == "dev"', "no-such-dist-here>=1"]
    wanted = device_requirements(lines)
    names = [w.split("=")[0].split(">")[0] for w in wanted]
    assert names == ["no-such-dist-here", "numpy", "onnxruntime"]
    assert any(w.startswith("numpy==") for w in wanted)  # the host's version
    assert "no-such-dist-here>=1" in wanted  # not installed here: kept as asked
    tags = platform_args()[1::2]
    assert "manylinux_2_27_aarch64" in tags and "manylinux2014_aarch64" in tags  # ai-edge-litert needs 2_27


def test_formats_a_pi_does_not_run_with_the_runtime_extra_are_refused(tmp_path: Path) -> None:
    from edgekit.emulation.check import check_artifact

    package = tmp_path / "m.fp16.mlpackage"
    package.mkdir()
    with pytest.raises(InputError, match="do not run on an emulated Raspberry Pi"):
        check_artifact(package, {"x": np.zeros((1, 2), np.float32)}, [], "pi4", "fp16")


def test_installing_tools_needs_root_and_says_so(monkeypatch) -> None:
    from edgekit.emulation import tools

    monkeypatch.setattr(tools, "missing_programs", lambda: ["debootstrap"])
    monkeypatch.setattr(tools.os, "geteuid", lambda: 1000)
    with pytest.raises(EmulationUnavailableError, match="not running as root") as caught:
        tools.install_tools()
    assert "sudo apt-get install -y --no-install-recommends debootstrap" in caught.value.message
