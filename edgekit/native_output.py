"""Keep converters' console chatter out of edgekit's output.

``quiet_python`` silences what they say through Python (logging, warnings,
prints, progress bars on sys.stderr) for the duration of a block.

Converters print from C++ (MLIR passes, XNNPACK, torchao's loader) straight to
file descriptor 2, which Python-level redirection cannot catch. During a
conversion, fd 2 points at a log file in the job's work folder instead;
``--keep-work`` keeps it for debugging.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def quiet_python() -> Iterator[None]:
    """No log record below ERROR, no warning and no print reaches the console inside the block; all restored after.

    ``logging.disable`` also covers loggers a converter creates lazily during the block.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


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
