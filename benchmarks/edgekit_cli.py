"""Run the installed `edgekit` as a child process, as a user would, for the benchmarks that time whole commands."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCH = "1798761600"  # 2027-01-01T00:00:00Z: manifests and bundles carry it instead of the wall clock


def edgekit(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``.venv/bin/edgekit ARGS``; exit codes 0 and 1 (a budget failed) return, anything else ends the benchmark."""
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "edgekit"), *map(str, args)], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"edgekit {' '.join(map(str, args[:2]))} failed ({done.returncode}): {done.stderr[-1500:]}")
    return done
