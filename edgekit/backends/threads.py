"""Candidates are built with one compute thread, so their bytes do not depend on where they were built.

Float reductions split over threads add up in another order, and some recipes
carry those last bits into the file: calibration ranges (torch's pt2e
observers) and k-means palettization (coremltools clusters with
scikit-learn, whose Lloyd iterations run on OpenMP). Measured: the
digits-cnn sample's Core ML ``palettize4`` weight.bin differed between a
process with ``OMP_NUM_THREADS=1`` and one with the default (2 here); in a
fleet of the five samples x eight profiles, 5 of 105 shipped artifacts
(Core ML ``palettize4`` of two samples, ExecuTorch and TFLite ``pt2e-static``
of the MobileNet) differed between the local pool, whose workers had 2
threads, and Ray, which gives a 1-CPU task one thread.

One thread is the setting every executor can share: the pool and Ray already
run one task per core. Only building is limited; measuring is not (the
runtimes take their thread counts from the session, not from here).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def one_compute_thread() -> Iterator[None]:
    """Run the block with torch's intra-op pool and every loaded OpenMP/BLAS pool at one thread; restore after.

    Without threadpoolctl (it comes with scikit-learn, which the k-means recipes
    need) only torch is limited: the libraries that could vary are then absent.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _native_pools_at_one():
            yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _native_pools_at_one() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield
