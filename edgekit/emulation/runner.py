"""Run one artifact on saved inputs and save its outputs: the guest side of ``check_artifact``.

Usage (inside the guest): ``python -m edgekit.emulation.runner REQUEST.json``.
The request names the artifact, an .npz of inputs (one array per model input)
and where to write the outputs (.npz, arrays ``0``, ``1``, ... in the
session's output order) and a JSON result: the runtime that ran, the
machine, each output's int8 scale when the model's outputs are quantized, or
the ops a CPU delegate took (``delegated_ops``: taken, total) where the
runtime says, or ``error`` (type and message) when the artifact could not be loaded or run.

Needs only numpy, the format's runtime and edgekit's session modules (the
``edgekit[runtime]`` install): the same session code as the host's run, so
the two runs differ only in the machine underneath.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Run the request's artifact; return the JSON result (outputs are written to ``request["outputs"]``)."""
    from edgekit.backends import detect_format, open_session, runtime

    artifact = Path(request["artifact"])
    fmt = detect_format(artifact)
    with np.load(request["inputs"]) as saved:
        feeds = {name: saved[name] for name in saved.files}
    session = open_session(artifact, threads=int(request.get("threads", 1)))
    try:
        outputs = session.run(feeds)
        quantization = getattr(session, "quantization", {}) or {}
        scales = [quantization.get(spec.name, {}).get("scale") for spec in session.outputs]
        # Sessions of runtimes with a CPU delegate say which ops it took: evidence the ARM kernels ran.
        delegation = session.delegation() if callable(getattr(session, "delegation", None)) else None
    finally:
        session.close()
    np.savez(request["outputs"], **{str(i): np.asarray(a) for i, a in enumerate(outputs)})
    return {"runtime": runtime(fmt).runtime_version(), "machine": platform.machine(),
            "python": platform.python_version(), "output_scales": scales,
            "delegated_ops": None if delegation is None else [sum(1 for op in delegation if op.get("delegated")),
                                                             len(delegation)]}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        result = run(request)
        code = 0
    except Exception as exc:  # the artifact's failure is the finding: report it to the host, do not crash
        result = {"error": {"type": type(exc).__name__, "message": str(exc)}, "machine": platform.machine()}
        code = 1
    Path(request["result"]).write_text(json.dumps(result), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
