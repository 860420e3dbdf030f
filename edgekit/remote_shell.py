"""Shell pieces shared by ``edgekit.remote`` and ``edgekit.remote_install``: quoting paths on the device,
the Python probe, and short error tails. Standard library only."""

from __future__ import annotations

import shlex

PROBE_MARK = "EDGEKIT-PROBE"
# Runs on the device's Python (any 3.x, so an old one can still say its version): one line describing it.
PROBE_CODE = (
    "import json, platform, sys\n"
    "try:\n    from importlib import metadata\n    version = metadata.version('edgekit')\n"
    "except Exception:\n    version = None\n"
    f"print('{PROBE_MARK} ' + json.dumps({{'python': sys.executable, 'python_version': platform.python_version(),"
    " 'edgekit': version, 'arch': platform.machine()}))\n"
)


def remote_path(path: str) -> str:
    """A shell word for a path on the device: ``~/x`` becomes ``"$HOME"/x``; everything else is quoted."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + (shlex.quote(path[1:]) if len(path) > 1 else "")
    return shlex.quote(path)


def tail(text: str, lines: int = 3) -> str:
    """The last non-empty lines of a command's output, on one line."""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip()) or "no message"
