"""Fixtures for the emulation tests: an emulated Pi 4, a real Pi release of a sample, edgekit's wheel for the guest.

The emulated board comes from the default cache (``$EDGEKIT_CACHE`` or
``~/.cache/edgekit/emulation``), so only the first run on a machine pays for
debootstrap and the wheel downloads. Tests that need it skip, saying what is
missing, when this machine cannot emulate (no QEMU, no debootstrap, no
package registry).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_models" / "mlp"  # the smallest sample: its Pi build takes ~20 s
DATA = REPO / "sample_models" / "data" / "digits_holdout.npz"


@dataclass(frozen=True)
class PiRelease:
    """A host build of the sample for raspberry-pi-4, signed into two bundle versions."""

    build: Path
    artifacts: dict[str, Path]  # by suffix
    data: Path
    public_key: Path
    bundles: dict[str, Path]  # by version


def edgekit(*args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the host's ``edgekit`` CLI in a child process."""
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="session")
def emulated_pi4():
    """The prepared emulated Raspberry Pi 4 (``edgekit.emulation.Guest``), or a skip naming what is missing."""
    from edgekit.emulation import prepare_guest
    from edgekit.errors import EmulationUnavailableError

    try:
        return prepare_guest("pi4")
    except EmulationUnavailableError as exc:
        pytest.skip(f"cannot emulate a Raspberry Pi here: {exc.message}")


@pytest.fixture(scope="session")
def pi_release(tmp_path_factory: pytest.TempPathFactory) -> PiRelease:
    """The sample built on this host for raspberry-pi-4 (.tflite int8 and .onnx fp16, each also run by the build
    on the emulated Pi 4), bundled as 1.0.0 and 1.1.0.

    The ONNX file is fp16, not the profile's int8: which ONNX int8 recipe ships follows host timing, and
    onnxruntime's integer kernels on x86 compute this MLP differently from the Cortex-A72 (static u8s8: 9.98
    LSB; dynamic: 11.8 LSB, docs/emulation.md), so the build's emulated check would pass or fail with the
    timing. The float recipes agree on both."""
    from edgekit.release.signing import generate_keypair

    root = tmp_path_factory.mktemp("pi_release")
    build = root / "build"
    # The sample's config, with the Pi 4 target validated on the emulated board by the build itself.
    config = root / "edgekit.toml"
    config.write_text((SAMPLE / "edgekit.toml").read_text().replace('"model.py:create"', f'"{SAMPLE / "model.py"}:create"')
                      .replace('"weights.safetensors"', f'"{SAMPLE / "weights.safetensors"}"')
                      .replace('"../data/', f'"{SAMPLE.parent / "data"}/')
                      + '\n[overrides.raspberry-pi-4]\nemulate = "pi4"\n'
                      + '[[overrides.raspberry-pi-4.artifacts]]\nformat = "tflite"\nprecision = "int8"\n'
                      + '[[overrides.raspberry-pi-4.artifacts]]\nformat = "onnx"\nprecision = "fp16"\n')
    done = edgekit("build", config, "-t", "raspberry-pi-4", "-o", build, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads(done.stdout)
    artifacts = {Path(a["path"]).suffix: build / a["path"] for a in manifest["artifacts"]}
    keys = generate_keypair(root / "keys", "release")
    bundles = {}
    for version in ("1.0.0", "1.1.0"):
        done = edgekit("bundle", build, "--key", keys.private, "--version", version, "-o", root / "bundles",
                       "--target", "raspberry-pi-4", "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        bundles[version] = Path(json.loads(done.stdout)["bundles"][0]["path"])
    return PiRelease(build, artifacts, DATA, keys.public, bundles)


@dataclass(frozen=True)
class GuestEdgekit:
    """edgekit's wheel built from this checkout, installed (without dependencies) into ``site`` for the guest."""

    wheel: Path
    site: Path


@pytest.fixture(scope="session")
def guest_edgekit(tmp_path_factory: pytest.TempPathFactory) -> GuestEdgekit:
    """edgekit from its own wheel (``pip wheel --no-deps .``), ready for the guest's path."""
    from edgekit.emulation.wheels import build_edgekit_wheel, install_wheel

    root = tmp_path_factory.mktemp("guest_edgekit")
    wheel = build_edgekit_wheel(REPO, root / "wheel")
    return GuestEdgekit(wheel, install_wheel(wheel, root / "site"))


@pytest.fixture()
def pi_files():
    """This module's constants and helpers (test modules cannot import each other)."""
    return sys.modules[__name__]
