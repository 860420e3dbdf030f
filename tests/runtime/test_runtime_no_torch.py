"""The device runtime runs with torch (and every converter) blocked from import: only the runtimes are there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

BLOCKED = ("torch", "onnx", "onnxscript", "tensorflow", "coremltools", "litert_torch", "ai_edge_quantizer",
           "executorch", "torchao", "matplotlib")

CHILD = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {blocked!r}

    class Forbidden(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not installed on this device")
            return None

    sys.meta_path.insert(0, Forbidden())
    import numpy as np
    from edgekit.cli import main
    from edgekit.runtime.model import Model

    store, control, candidate, key = sys.argv[1:5]
    for args in (["install", control, "--into", store, "--key", key],
                 ["install", candidate, "--into", store, "--key", key, "--candidate", "50",
                  "--abort-if", "min_requests=10"]):
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, exc.code
    x = np.random.default_rng(0).uniform(-1, 1, (1, 16)).astype(np.float32)
    with Model.open(store, cache_size=4, max_batch=4) as model:
        versions = [model.predict({{"x": x}}, unit_id=f"u{{i}}").provenance.version for i in range(100)]
        aborted = model.stats()["aborted"]
    assert aborted and aborted[0]["reason"]["rule"] == "error_rate", aborted
    assert set(versions[-50:]) == {{"1.0.0"}}, versions
    try:
        main(["audit", "verify", store + "/predictions.log"])
    except SystemExit as exc:
        assert not exc.code, exc.code
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    print("BLOCKED-LOADED:", ",".join(loaded))
    """
)


def test_install_ab_abort_and_audit_run_without_torch(tmp_path: Path, keys, bundles) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "EDGEKIT_DEVICE_ID")}
    env["EDGEKIT_TARGET"] = "raspberry-pi-4"
    done = subprocess.run([sys.executable, "-c", CHILD.format(blocked=BLOCKED), str(tmp_path / "store"),
                           str(bundles["1.0.0"]), str(bundles["1.2.0"]), str(keys.public)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "BLOCKED-LOADED: \n" in done.stdout and "chain intact" in done.stdout
