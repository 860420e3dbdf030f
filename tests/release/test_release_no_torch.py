"""verify, install and rollback run on a device without torch (or any converter)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

HEAVY = (
    "torch",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "tensorflow",
    "coremltools",
    "litert_torch",
    "ai_edge_litert",
    "ai_edge_quantizer",
)

# The child process makes every heavy import fail, then runs the CLI: if any
# code path on the device side touched torch, the command would crash.
CHILD = textwrap.dedent(
    """
    import importlib.abc, sys
    HEAVY = {heavy!r}

    class Forbidden(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ImportError(f"{{name}} is not installed on this device")
            return None

    sys.meta_path.insert(0, Forbidden())
    from edgekit.cli import main
    try:
        main(sys.argv[1:])
    finally:
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(HEAVY))
        print("HEAVY-LOADED:", ",".join(loaded), file=sys.stderr)
    """
)


def _device_run(*args: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "EDGEKIT_DEVICE_ID")}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-c", CHILD.format(heavy=HEAVY), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _imported(stderr: str) -> set[str]:
    return {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in stderr.splitlines() if line.startswith("import time:")
    }


def test_verify_install_rollback_status_never_import_torch(
    kit: ModuleType, tmp_path: Path, keys: Any, bundles: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    runs = [
        _device_run("verify", bundles["1.0.0"], "--key", keys.public),
        _device_run("install", bundles["1.0.0"], "--into", store, "--key", keys.public, "--device-id", "pi-7",
                    "--target", "raspberry-pi-4"),
        _device_run("install", bundles["1.1.0"], "--into", store, "--key", keys.public, "--device-id", "pi-7"),
        _device_run("rollback", "--into", store),
        _device_run("status", "--into", store, "--key", keys.public),
    ]
    for index, done in enumerate(runs):
        assert done.returncode == 0, done.stderr[-2000:]
        assert "HEAVY-LOADED: \n" in done.stderr
        imported = _imported(done.stderr)
        assert {"click", "edgekit"} <= imported, "the import log was parsed"
        assert ("cryptography" in imported) == (index != 3), "signatures are checked; rollback needs no crypto"
        assert not imported & set(HEAVY), imported & set(HEAVY)
    assert (store / "versions" / "1.0.0").is_dir()


def test_importing_edgekit_does_not_load_cryptography() -> None:
    code = (
        "import sys, edgekit, edgekit.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', 'torch')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
