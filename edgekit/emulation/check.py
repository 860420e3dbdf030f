"""Run an artifact on an emulated Raspberry Pi and compare its outputs with the host's.

This is the check ``edgekit validate --emulate`` and ``build`` call. The guest
runs the artifact's own bytes in its own aarch64 runtime (the runtime's ARM
kernels: XNNPACK and MLAS NEON code paths) under QEMU with the board's CPU
model, on a bounded number of samples. It is a correctness check: emulation
runs 200-600x slower than the device, so no timing is taken from it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import sha256_file
from edgekit.emulation.compare import QUANTIZED_PRECISIONS, bound_for, compare_outputs, failed
from edgekit.emulation.devices import EmulatedDevice
from edgekit.emulation.guest import DEFAULT_TIMEOUT_S, Guest, prepare_guest
from edgekit.emulation.wheels import DEVICE_EXTRA
from edgekit.errors import InputError

# Samples per check: enough to cover every output class of the samples' models; each
# adds well under a second emulated for small models, while starting the guest costs ~5-10 s.
DEFAULT_SAMPLES = 16


def check_artifact(path: Path | str, inputs: Mapping[str, np.ndarray], host_outputs: Sequence[np.ndarray] | None,
                   device: str | EmulatedDevice, precision: str, *, samples: int = DEFAULT_SAMPLES,
                   cache_dir: Path | str | None = None, install_tools: bool = False,
                   timeout_s: float = DEFAULT_TIMEOUT_S, guest: Guest | None = None) -> dict[str, Any]:
    """Run ``path`` on the emulated ``device`` and compare with ``host_outputs``; a plain-dict record.

    ``inputs`` are the model's inputs by name (first axis = samples); the
    first ``samples`` are used. ``host_outputs`` are the host session's
    outputs, in its output order, for exactly those samples run as one
    batch (a dynamically quantized model picks its activation scales per
    batch, so outputs of other batches differ); None runs the host session
    here to get them, which is the safe choice. ``precision`` picks the
    bound (``edgekit.emulation.compare``). Returns e.g.::

        {"validated_on": "emulated cortex-a72", "device": "pi4", "samples": 16,
         "max_rel_error": 2e-07, "max_lsb": 0.0, "status": "pass", ...}

    ``status`` is ``fail`` when the outputs differ beyond the bound or the
    guest could not run the artifact (``message`` says which). Raises
    ``EmulationUnavailableError`` when this machine cannot emulate (no QEMU,
    no registry) and ``InputError`` for a format a Pi does not run with
    ``edgekit[runtime]``.
    """
    path = Path(path).resolve()
    _require_device_format(path)
    bound_for(precision)  # an unknown precision fails before anything slow happens
    count = min(samples, *(len(a) for a in inputs.values()))
    feeds = {name: np.ascontiguousarray(a[:count]) for name, a in inputs.items()}
    expected = _host_outputs(path, feeds) if host_outputs is None else [np.asarray(a)[:count] for a in host_outputs]
    guest = guest or prepare_guest(device, cache_dir, install_tools=install_tools)
    record: dict[str, Any] = {
        "validated_on": guest.device.validated_on, "device": guest.device.name, "board": guest.device.label,
        "emulator": guest.tools.qemu_version(), "artifact": path.name, "sha256": sha256_file(path),
        "precision": precision, "samples": count,
    }
    started = time.perf_counter()
    result, outputs = _run_in_guest(guest, path, feeds, timeout_s)
    record["guest_runtime"] = result.get("runtime")
    record["delegated_ops"] = result.get("delegated_ops")
    if "error" in result:
        record.update(failed(precision, result["error"]["message"]))
        record["error"] = result["error"]
    else:
        record.update(compare_outputs(outputs, expected, precision, result.get("output_scales") or ()))
    record["seconds"] = {"setup": round(guest.setup_s, 2), "run": round(time.perf_counter() - started, 2)}
    return record


def _host_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The host runtime's outputs for ``feeds`` as one batch, one thread (as the guest runs them)."""
    from edgekit.backends import open_session

    session = open_session(path, threads=1)
    try:
        return [np.asarray(a) for a in session.run(feeds)]
    finally:
        session.close()


def _require_device_format(path: Path) -> None:
    """Refuse formats a Pi does not run with edgekit[runtime] (Core ML, torch-based runtimes)."""
    from edgekit.backends import REGISTRY, detect_format, info

    entry = info(detect_format(path))
    if entry.emulated or entry.bench_only_on or entry.runtime_extra != DEVICE_EXTRA:
        runnable = ", ".join(s for e in REGISTRY.values() if e.runtime_extra == DEVICE_EXTRA and not e.emulated
                             and not e.bench_only_on for s in e.suffixes)
        raise InputError(f"{path.name}: {entry.label} artifacts do not run on an emulated Raspberry Pi "
                         f"with edgekit[{DEVICE_EXTRA}]", f"Emulation checks {runnable} artifacts")


def _run_in_guest(guest: Guest, artifact: Path, feeds: dict[str, np.ndarray],
                  timeout_s: float) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Run the guest-side runner on ``feeds``; its JSON result and outputs (an ``error`` result on failure)."""
    with tempfile.TemporaryDirectory(prefix="edgekit-emulate-") as scratch:
        work = Path(scratch)
        source = copy_edgekit(work / "src")
        np.savez(work / "inputs.npz", **feeds)
        request = {"artifact": str(artifact), "inputs": str(work / "inputs.npz"), "outputs": str(work / "outputs.npz"),
                   "result": str(work / "result.json"), "threads": 1}
        (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
        try:
            done = guest.run(["-m", "edgekit.emulation.runner", str(work / "request.json")], paths=[source], cwd=work,
                             timeout_s=timeout_s)
        except subprocess.TimeoutExpired:
            return _error("Timeout", f"the emulated run did not finish within {timeout_s:g} s"), []
        if not (work / "result.json").is_file():
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
            return _error("GuestCrash", f"the emulated Python died ({how}): {tail}"), []
        result = json.loads((work / "result.json").read_text(encoding="utf-8"))
        if "error" in result:
            return result, []
        with np.load(work / "outputs.npz") as saved:
            return result, [saved[str(i)] for i in range(len(saved.files))]


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def copy_edgekit(destination: Path) -> Path:
    """Copy the running edgekit package into ``destination/edgekit``; returns the folder to put on the guest's path.

    A copy rather than the live folder: the guest sees exactly the code the
    host ran, and its bytecode files stay out of the source tree. Cached
    ``.pyc`` files come along with their sources' times, so a host on the
    guest's Python version spares the emulated one from compiling them. The
    device profiles (``edgekit.targets``) live outside the package in a
    source checkout and are copied in where an install puts them.
    """
    import importlib.util

    import edgekit

    package = destination / "edgekit"
    shutil.copytree(Path(edgekit.__file__).resolve().parent, package)
    targets = importlib.util.find_spec("edgekit.targets")
    locations = list(targets.submodule_search_locations or []) if targets is not None else []
    if locations and not (package / "targets").exists():
        shutil.copytree(locations[0], package / "targets")
    return destination


def precision_of(artifact: Path, recorded: str | None) -> str:
    """The precision whose bound applies: the build report's, else the one in the file name, else int8's bound.

    edgekit names artifacts ``<model>.<precision>[.<io>].<suffix>``; a file
    named otherwise and without a report is judged by the quantized bound,
    which float artifacts also meet when they agree.
    """
    if recorded and recorded in (*QUANTIZED_PRECISIONS, "fp32", "fp16"):
        return recorded
    for part in artifact.name.split("."):
        if part in (*QUANTIZED_PRECISIONS, "fp32", "fp16"):
            return part
    return QUANTIZED_PRECISIONS[0]


def describe(record: dict[str, Any]) -> str:
    """One line for a terminal: where it ran, the verdict and the measures."""
    head = f"{record['validated_on']} ({record['board']}): {record['status']}"
    if record.get("max_rel_error") is None:
        return f"{head}: {record['message']}"
    return (f"{head} on {record['samples']} samples: max relative error {record['max_rel_error']:.3g}, "
            f"max {record['max_lsb']:.3g} LSB ({record['lsb_basis']}); {record['message']}")


def check_validated_session(artifact: Path, session: Any, inputs: Mapping[str, np.ndarray], device: str,
                            precision: str | None, install_tools: bool = False) -> dict[str, Any]:
    """``check_artifact`` for ``edgekit validate``: runs the host ``session`` on the same samples first."""
    count = min(DEFAULT_SAMPLES, *(len(a) for a in inputs.values()))
    feeds = {name: a[:count] for name, a in inputs.items()}
    host = session.run(feeds)
    return check_artifact(artifact, feeds, host, device, precision_of(artifact, precision), samples=count,
                          install_tools=install_tools)
