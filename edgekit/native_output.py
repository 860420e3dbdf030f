"""Keep native libraries' console chatter out of edgekit's output.

Converters print from C++ (MLIR passes, XNNPACK, torchao's loader) straight to
file descriptor 2, which Python-level redirection cannot catch. During a
conversion, fd 2 points at a log file in the job's work folder instead;
``--keep-work`` keeps it for debugging.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def terminal_stderr() -> TextIO:
    """A stream on a duplicate of the current fd 2: progress drawn here stays visible while fd 2 is redirected."""
    return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")


@contextmanager
def native_stderr_to(log: Path) -> Iterator[None]:
    """Point fd 2 at ``log`` (appending) for the duration of the block."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a test runner's stand-in stream: nothing native to catch
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with log.open("ab") as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
