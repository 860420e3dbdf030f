"""Stage 3's optional device check: each shipped artifact of a target whose profile names an emulated board
(``[device] emulate = "pi4"``) runs there, in the board's own aarch64 runtime, on the first evaluation samples,
and its outputs are compared with this host's (``edgekit.emulation``; bounds in docs/emulation.md).

The record lands in the manifest entry (``emulation``, with ``validated_on: "emulated cortex-a72"``) and
as the ``emulated_agreement`` check: a mismatch fails the artifact; a machine that cannot emulate (no QEMU,
no package registry) or a format a Pi does not run with ``edgekit[runtime]`` skips it, saying why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import EmulationUnavailableError, InputError
from edgekit.validate import Check

CHECK = "emulated_agreement"


def emulated_record(board: str, artifact: Path, inputs: dict[str, Any], precision: str) -> dict[str, Any]:
    """Run ``artifact`` on the emulated ``board``; the comparison record, or why it could not run."""
    import numpy as np

    from edgekit.emulation.check import check_artifact

    feeds = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in inputs.items()}
    try:
        record = check_artifact(artifact, feeds, None, board, precision)
    except EmulationUnavailableError as exc:
        return {"device": board, "status": "unavailable", "message": exc.message}
    except InputError as exc:  # a format the board does not run with edgekit[runtime]
        return {"device": board, "status": "not run", "message": exc.message}
    record.pop("seconds", None)  # how long QEMU took is this host's business, not the release's
    return record


def emulation_check(record: dict[str, Any]) -> Check:
    """The ``emulated_agreement`` check of a record: pass, fail, or skipped with the reason."""
    status = record.get("status")
    if status in ("pass", "fail"):
        where = record.get("validated_on", f"emulated {record.get('device')}")
        note = f"outputs on the {where} against this host's, {record.get('samples')} samples"
        if record.get("message"):
            note += f": {record['message']}"
        return Check(CHECK, 1.0, 1.0 if status == "pass" else 0.0, status, note)
    return Check(CHECK, 1.0, None, "skipped", str(record.get("message", "not run")))
