"""Where a build's tasks run: in this process, in a local process pool, or on a Ray cluster.

A task is a top-level function applied to one picklable item; ``map`` returns
one outcome per item, in order: the function's result, or the exception it
raised (a failing task never takes the others down, as a failing target
never does). The pool and Ray ship the function by reference and the item by
pickle, so both must be importable and picklable.

``workers`` says how many tasks may run at once. With more than one, host
timings inside tasks are taken under the load of the others: the pipeline
marks such measurements (``timed_under_load``) instead of pretending they
ran alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from edgekit.errors import BackendUnavailableError, InputError

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("serial", "local", "ray")


class Executor(Protocol):
    """Runs ``fn`` over items; ``name`` and ``workers`` describe where and how wide."""

    name: str
    workers: int

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R | BaseException]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Every task in this process, one after another (the build's own timing is then undisturbed)."""

    name = "serial"
    workers = 1

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R | BaseException]:
        outcomes: list[R | BaseException] = []
        for item in items:
            try:
                outcomes.append(fn(item))
            except Exception as exc:  # recorded per task, like a process pool's
                outcomes.append(exc)
        return outcomes

    def close(self) -> None:
        return None


class LocalExecutor:
    """A pool of fresh processes (spawned: no forked torch or runtime state), ``workers`` wide."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        import concurrent.futures
        import multiprocessing

        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R | BaseException]:
        futures = [self._pool.submit(fn, item) for item in items]
        outcomes: list[R | BaseException] = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except Exception as exc:  # includes a worker that died (BrokenProcessPool)
                outcomes.append(exc)
        return outcomes

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class RayExecutor:
    """Tasks on a Ray cluster: ``address`` joins a running one ("auto", "ray://host:10001"); None starts a
    local single-node Ray for the build and stops it afterwards."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ModuleNotFoundError:
            raise BackendUnavailableError("--executor ray needs Ray, which is not installed",
                                          'pip install "edgekit[fleet]" (Ray is pinned in constraints.txt)') from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if address is not None:
            _probe(address)
        if self._started:
            try:
                ray.init(address=address, num_cpus=workers if address is None else None, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise InputError(f"could not reach a Ray cluster at {address or 'a new local node'}: {exc}",
                                 "Check --address (e.g. ray://head:10001 or auto), or leave it out to start a "
                                 "local Ray") from None
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R | BaseException]:
        remote = self._ray.remote(num_cpus=1, max_retries=0)(fn)
        refs = [remote.remote(item) for item in items]
        outcomes: list[R | BaseException] = []
        for ref in refs:
            try:
                outcomes.append(self._ray.get(ref))
            except self._ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                outcomes.append(cause if isinstance(cause, BaseException) else exc)
            except Exception as exc:  # a lost worker or node
                outcomes.append(exc)
        return outcomes

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on: ray.init retries such an address for many minutes."""
    import socket

    if address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise InputError(f"no Ray cluster answers at {address} ({exc})",
                         "Check the head node's address and port (ray status on the head), or leave out --address "
                         "to start a local Ray") from None


def make_executor(kind: str = "serial", address: str | None = None, workers: int | None = None) -> Any:
    """The executor named ``kind`` (one of ``EXECUTORS``); ``address`` is for Ray only."""
    if kind not in EXECUTORS:
        raise InputError(f"unknown executor '{kind}'", f"Use one of: {', '.join(EXECUTORS)}")
    if address is not None and kind != "ray":
        raise InputError("--address names a Ray cluster", "Add --executor ray, or drop --address")
    if kind == "ray":
        return RayExecutor(address, workers)
    if kind == "local":
        return LocalExecutor(workers)
    return SerialExecutor()
