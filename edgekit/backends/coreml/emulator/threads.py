"""How many BLAS threads numpy may use while the emulator runs.

The emulator's time goes into numpy, and its matmuls into the BLAS numpy
links (OpenBLAS in the wheels). OpenBLAS starts one thread per core, which
on a busy machine makes small matmuls slower, not faster. Measured on the
2-core build machine while other jobs ran: the MobileNet sample's 412
evaluation samples took 7.3-8.3 s with OpenBLAS's default 2 threads and
3.0-3.1 s with 1. Sessions therefore honour their ``threads`` argument
(1 by default, as for every edgekit session).

threadpoolctl (a scikit-learn dependency, so present with the ``coreml``
extra) does the limiting; without it BLAS keeps its environment's setting
(``OPENBLAS_NUM_THREADS``), which is only slower, never wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_controller: Any = None


def _blas_controller() -> Any:
    """A threadpoolctl controller for the BLAS libraries loaded now, or None without threadpoolctl."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _controller = False
        else:
            _controller = ThreadpoolController()  # scans loaded libraries once (about 1 ms); limits then cost ~15 us
    return _controller or None


@contextlib.contextmanager
def blas_threads(count: int | None) -> Iterator[None]:
    """Limit BLAS to ``count`` threads inside the block; ``None`` leaves the setting alone."""
    controller = _blas_controller() if count is not None else None
    if controller is None:
        yield
        return
    with controller.limit(limits=count, user_api="blas"):
        yield
