"""The commit step of an install: run the device's own health check on the new version, roll back if it fails.

As in Mender's commit step, an update is not final until the device says it
works: ``edgekit install --health-check CMD`` runs ``CMD`` (no shell; wrap a
pipeline in ``sh -c``) after the switch, with ``EDGEKIT_MODEL_DIR`` (the new
version's folder) and ``EDGEKIT_MODEL_VERSION`` in its environment. A non-zero
exit, a crash or running past the timeout rolls the store back to the version
it replaced (or back to empty after a first install), and the failed version
is blocked on this device like a manual rollback.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import InputError

DEFAULT_TIMEOUT_S = 60.0
_OUTPUT_TAIL = 2000  # characters of the check's output kept for the log and the message


@dataclass(frozen=True)
class HealthResult:
    passed: bool
    reason: str  # "exit 0", "exit 3", "timed out after 60 s", "could not start: ..."
    seconds: float
    output: str  # the tail of stdout + stderr

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "seconds": round(self.seconds, 3), "output": self.output}


def parse_command(text: str) -> list[str]:
    """``text`` split as a shell would (no shell runs it); InputError for an empty or unbalanced command."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise InputError(f"--health-check {text!r} cannot be parsed ({exc})", "Quote it as you would in a shell") from None
    if not words:
        raise InputError("--health-check is empty", "Give the command that checks the model, e.g. 'myapp --selftest'")
    return words


def run_health_check(command: list[str], model_dir: Path, version: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> HealthResult:
    """Run ``command`` against the installed version; passed only on exit 0 within ``timeout_s``."""
    env = {**os.environ, "EDGEKIT_MODEL_DIR": str(model_dir), "EDGEKIT_MODEL_VERSION": version}
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        return HealthResult(False, f"timed out after {timeout_s:g} s", time.perf_counter() - started,
                            output[-_OUTPUT_TAIL:])
    except OSError as exc:
        return HealthResult(False, f"could not start: {exc.strerror or exc}", time.perf_counter() - started, "")
    output = (done.stdout + done.stderr)[-_OUTPUT_TAIL:]
    return HealthResult(done.returncode == 0, f"exit {done.returncode}", time.perf_counter() - started, output)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
