"""Every command in the README's usage block runs, as written, in the order written.

The test prepares the world the block assumes — a user's own model exported as
``model.pt2``, a factory package ``mypkg`` with its weights, data files and a
device profile of their own (all from the shipped MLP sample), a copy of
``sample_models/`` — then runs each line verbatim with bash from that folder.
Files a line names that an earlier line does not make are what a user would
have at hand (an artifact copied to the device, a second device's bench
report); they are prepared just before the line. One substitution: the
device store ``/var/lib/models`` becomes a folder under the test's own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
STORE = "/var/lib/models"


def usage_lines() -> list[str]:
    """The ``edgekit ...`` lines of the first shell block under "## Using it"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using it", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README's usage section has no ```sh block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip().startswith("edgekit ")]


def _prepare_world(world: Path) -> None:
    """What the block assumes the user has: their model, package, weights, data and profile."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(SAMPLES, world / "sample_models", ignore=shutil.ignore_patterns("__pycache__"))
    (world / "mypkg").mkdir()
    (world / "mypkg" / "__init__.py").write_text("")
    shutil.copy(SAMPLES / "mlp" / "model.py", world / "mypkg" / "models.py")
    shutil.copy(SAMPLES / "mlp" / "weights.safetensors", world / "w.safetensors")
    for name in ("calib.npz", "d.npz"):
        shutil.copy(SAMPLES / "data" / "digits_holdout.npz", world / name)
    sys.path.insert(0, str(SAMPLES / "mlp"))
    try:
        from model import create  # the sample's own definition
    finally:
        sys.path.remove(str(SAMPLES / "mlp"))
    model = create().eval()
    model.load_state_dict(load_file(SAMPLES / "mlp" / "weights.safetensors"))
    example = torch.from_numpy(np.load(world / "d.npz")["x"][:2])
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), world / "model.pt2")
    (world / "my-device.toml").write_text(
        'name = "my-device"\ndescription = "A gateway of our own"\n\n[device]\nkind = "sbc"\narch = "aarch64"\n'
        'cores = 4\nram_mb = 2048\n\n[[artifacts]]\nformat = "onnx"\nprecision = "int8"\n\n'
        "[budgets]\nmax_size_mb = 1.0\nmax_accuracy_drop = 0.02\n"
    )


def _earlier_install(world: Path) -> None:
    """A store that already runs 0.9.0, so the block's rollback has a version to go back to."""
    _edgekit(world, "edgekit bundle out/ --key keys/edgekit.key --version 0.9.0 -o older/ -t raspberry-pi-4")
    _edgekit(world, f"edgekit install older/model-0.9.0-raspberry-pi-4.tar.gz --key keys/edgekit.pub --into {STORE} "
                    "-t raspberry-pi-4")


def _second_device_report(world: Path) -> None:
    """pi5.json: the same bench run on a second device (here, the same host again)."""
    _edgekit(world, "edgekit bench model.int8.tflite --runs 20 --json > pi5.json")


def _artifact_on_device(world: Path) -> None:
    """model.int8.onnx with the build report that travels beside it in a bundle (its FP32 accuracy, precision)."""
    for name in ("model.int8.onnx", "model.int8.onnx.report.json"):
        shutil.copy(world / "out/raspberry-pi-4" / name, world)


# Before the line that starts with the key: what the user has at hand by then.
BEFORE: dict[str, Callable[[Path], None]] = {
    "edgekit validate model.int8.onnx": _artifact_on_device,
    "edgekit install ": _earlier_install,
    "edgekit bench model.int8.tflite": lambda w: shutil.copy(w / "out/raspberry-pi-4/model.int8.tflite", w),
    "edgekit bench compare": _second_device_report,
}


def _edgekit(world: Path, line: str) -> subprocess.CompletedProcess[str]:
    """Run one shell line from ``world`` with this interpreter's ``edgekit`` first on PATH."""
    command = line.replace(STORE, str(world / STORE.lstrip("/")))
    # As a user runs them: the default executor (a process pool) and a build cache, here the world's own
    # (the suite's serial, cache-free setting is for tests that compare builds).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "EDGEKIT_DEVICE_ID": "readme-device", "EDGEKIT_CACHE": str(world / "edgekit-cache")}
    for setting in ("EDGEKIT_NO_CACHE", "EDGEKIT_EXECUTOR"):
        env.pop(setting, None)
    done = subprocess.run(["bash", "-c", command], cwd=world, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"`{line}` exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_usage_block_lists_every_command() -> None:
    lines = usage_lines()
    commands = {line.split()[1] for line in lines}
    assert {"targets", "build", "inspect", "validate", "prune", "distill", "keygen", "bundle", "verify", "install",
            "rollback", "bench"} <= commands
    assert all(any(line.startswith(key) for line in lines) for key in BEFORE), "a preparation names no line"


@pytest.mark.slow
def test_every_usage_line_runs_as_written(tmp_path: Path) -> None:
    world = tmp_path / "world"
    world.mkdir()
    _prepare_world(world)
    seconds = {}
    for line in usage_lines():
        for key, prepare in BEFORE.items():
            if line.startswith(key):
                prepare(world)
        started = time.perf_counter()
        _edgekit(world, line)
        seconds[line] = time.perf_counter() - started
    # What the lines promise, beyond exit code 0:
    assert (world / "out/jetson-orin-nano/model.int8.onnx").is_file()
    assert (world / "pi4.json").stat().st_size > 0 and (world / "pi5.json").stat().st_size > 0
    assert (world / "var/lib/models/state.json").is_file()
    print("\n".join(f"{s:6.1f}s {line}" for line, s in seconds.items()))
