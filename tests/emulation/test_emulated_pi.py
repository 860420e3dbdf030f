"""A sample's Pi release on an emulated Raspberry Pi 4: the artifacts compute the same as on this host,
a swapped artifact is caught, and the device-side CLI (runtime extra only, no torch) works end to end.

Everything runs the real thing: QEMU user mode, a Debian arm64 root, the
aarch64 wheels of the runtimes, edgekit's own wheel. Skipped, saying what is
missing, on a machine that cannot emulate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _inputs(release, path: Path) -> dict[str, np.ndarray]:
    from edgekit.backends import open_session
    from edgekit.data import bind_inputs, load_npz

    session = open_session(path)
    try:
        return bind_inputs(load_npz(release.data), [s.name for s in session.inputs], str(release.data)).inputs
    finally:
        session.close()


def test_the_pi_artifacts_compute_the_same_on_the_emulated_pi(emulated_pi4, pi_release) -> None:
    from edgekit.emulation import check_artifact

    for suffix, path in sorted(pi_release.artifacts.items()):
        record = check_artifact(path, _inputs(pi_release, path), None, "pi4", "int8", guest=emulated_pi4)
        assert record["status"] == "pass", record
        assert record["validated_on"] == "emulated cortex-a72" and record["samples"] == 16
        assert record["max_lsb"] <= record["bound"]["max_lsb"]
        assert record["guest_runtime"] and record["sha256"]
        taken = record["delegated_ops"]
        if taken is not None:  # the runtime's ARM CPU delegate ran every op (it skips them without an ARM cpuinfo)
            assert taken[0] == taken[1] > 0, (suffix, taken)


def test_the_build_records_each_pi_artifact_run_on_the_emulated_board(emulated_pi4, pi_release) -> None:
    manifest = json.loads((pi_release.build / "manifest.json").read_text())
    assert {Path(a["path"]).suffix for a in manifest["artifacts"]} == {".tflite", ".onnx"}
    for artifact in manifest["artifacts"]:
        record = artifact["emulation"]
        assert record["validated_on"] == "emulated cortex-a72" and record["status"] == "pass", record
        assert record["sha256"] == artifact["sha256"] and record["samples"] > 0
        check = next(c for c in artifact["checks"] if c["budget"] == "emulated_agreement")
        assert check["status"] == "pass" and artifact["passed"]


def test_an_artifact_swapped_after_host_validation_is_caught(emulated_pi4, pi_release, tmp_path: Path) -> None:
    """The host validated one file; the device gets other bytes (here: the same graph with other biases)."""
    import onnx
    from onnx import numpy_helper

    from edgekit.backends import open_session
    from edgekit.emulation import check_artifact

    original = pi_release.artifacts[".onnx"]
    inputs = {name: array[:16] for name, array in _inputs(pi_release, original).items()}
    session = open_session(original)
    host_outputs = session.run(inputs)
    session.close()
    swapped = tmp_path / original.name
    model = onnx.load(str(original))
    for tensor in model.graph.initializer:
        if tensor.name.endswith("bias"):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 1.5 + 0.1, tensor.name))
    onnx.save(model, str(swapped))
    assert swapped.read_bytes() != original.read_bytes()

    honest = check_artifact(original, inputs, host_outputs, "pi4", "int8", guest=emulated_pi4)
    caught = check_artifact(swapped, inputs, host_outputs, "pi4", "int8", guest=emulated_pi4)
    assert honest["status"] == "pass"
    assert caught["status"] == "fail" and caught["max_lsb"] > 10 * caught["bound"]["max_lsb"], caught
    assert caught["sha256"] != honest["sha256"] and "exceeds the bound" in caught["message"]


def test_validate_emulate_prints_the_record_and_exits_1_on_a_mismatch(emulated_pi4, pi_release, pi_files,
                                                                      monkeypatch) -> None:
    artifact = pi_release.artifacts[".tflite"]
    done = pi_files.edgekit("validate", artifact, "--data", pi_release.data, "--emulate", "pi4", "--runs", "3",
                            "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout)["emulation"]
    assert record["status"] == "pass" and record["validated_on"] == "emulated cortex-a72"

    # A device that computes something else: the same command must fail, after printing the report.
    from edgekit.cli import main
    from edgekit.emulation import check

    monkeypatch.setattr(check, "check_validated_session", lambda *a, **k: {**record, "status": "fail",
                                                                           "message": "max_lsb 40 exceeds the bound 1"})
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", str(artifact), "--data", str(pi_release.data), "--emulate", "pi4", "--runs", "3"])
    assert exit_info.value.code == 1


def test_the_device_side_cli_runs_in_the_emulated_pi_without_torch(emulated_pi4, pi_release, guest_edgekit, pi_files,
                                                                   tmp_path: Path) -> None:
    from edgekit.emulation import prepare_guest
    from edgekit.emulation.wheels import device_requirements, wheel_requires

    # What `pip install "edgekit[runtime]"` would bring, from the wheel's own metadata (cached: no new set-up).
    guest = prepare_guest("pi4", requirements=device_requirements(wheel_requires(guest_edgekit.wheel)))
    assert not any(p.name.startswith("torch") for p in [*guest.site.iterdir(), *guest_edgekit.site.iterdir()])

    def device(*args: object) -> dict:
        done = guest.run(["-m", "edgekit", *map(str, args), "--json"], paths=[guest_edgekit.site], timeout_s=600)
        assert done.returncode == 0, (args, done.stderr[-2000:])
        return json.loads(done.stdout)

    probe = guest.run(["-c", "import importlib.util, platform, edgekit; "
                             "print(platform.machine(), importlib.util.find_spec('torch'), edgekit.__file__)"],
                      paths=[guest_edgekit.site])
    machine, torch_spec, location = probe.stdout.split()
    assert (machine, torch_spec) == ("aarch64", "None") and location.startswith(str(guest_edgekit.site))

    store, key, bundles = tmp_path / "store", pi_release.public_key, pi_release.bundles
    verified = device("verify", bundles["1.0.0"], "--key", key)
    assert {Path(a["path"]).suffix for a in verified["artifacts"]} == set(pi_release.artifacts)
    first = device("install", bundles["1.0.0"], "--into", store, "--key", key, "--device-id", "pi-emu",
                   "--target", "raspberry-pi-4")
    assert all(r["status"] == "ok" for r in first["runtimes"])  # the guest's own aarch64 runtimes
    second = device("install", bundles["1.1.0"], "--into", store, "--key", key, "--device-id", "pi-emu")
    assert second["previous"] == "1.0.0"
    assert device("rollback", "--into", store)["version"] == "1.0.0"

    release = store / "versions" / "1.0.0"
    installed = sorted(p for suffix in pi_release.artifacts for p in release.rglob(f"*{suffix}"))
    bench = device("bench", *installed, "--runs", "3", "--warmup", "1")
    assert bench["machine"]["arch"] == "aarch64" and bench["machine"]["cpu"].startswith("ARM CPU part 0xd08")
    assert len(bench["results"]) == len(pi_release.artifacts)

    tflite = next(p for p in installed if p.suffix == ".tflite")
    on_device = device("validate", tflite, "--data", pi_release.data, "--runs", "3")
    host = json.loads(pi_files.edgekit("validate", tflite, "--data", pi_release.data, "--runs", "3", "--json").stdout)
    assert on_device["metrics"]["accuracy"] == host["metrics"]["accuracy"]


def test_a_hung_guest_is_killed_with_its_children_at_the_timeout(emulated_pi4) -> None:
    import subprocess
    import threading
    import time
    import uuid

    token = f"edgekit-hang-{uuid.uuid4().hex}"
    # The guest starts a child Python (through the launcher, as runtimes' workers do), then both hang.
    code = ("import subprocess, sys, time; "
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{token}']); time.sleep(600)")
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # count the processes carrying the token while the guest runs
        while not stop.is_set():
            seen.append(len(_carrying(token)))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            emulated_pi4.run(["-c", code, token], timeout_s=8)
    finally:
        stop.set()
        watcher.join()
    assert max(seen) >= 2  # the guest and its child were both running
    assert _carrying(token) == []


def _carrying(token: str) -> list[Path]:
    return [p for p in Path("/proc").iterdir() if p.name.isdigit() and token in _cmdline(p)]


def _cmdline(process: Path) -> str:
    try:
        return (process / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
