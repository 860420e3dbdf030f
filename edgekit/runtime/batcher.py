"""A micro-batcher: single requests from many threads, run as batches of at most ``max_batch`` samples.

A gateway serving many clients pays a model's per-call cost once per batch
instead of once per request. ``MicroBatcher`` queues requests, waits at most
``max_wait_ms`` (from the oldest queued request's arrival) for a batch to
fill, concatenates their feeds along the sample axis, makes one call of
``run`` from its single worker thread and hands each caller its own rows.

Contracts:

- Every feed of a request has a leading sample axis of n >= 1 rows, the same
  n for all its inputs. Requests are never split: a batch takes whole
  requests, in arrival order, while their total rows fit ``max_batch``; a
  request with more rows than ``max_batch`` runs alone.
- Requests whose inputs differ in names, non-batch shape or dtype (their
  *signature*) are never concatenated together.
- ``run`` is only ever called from the worker thread, one call at a time, so
  a session that is not thread-safe can be shared by any number of callers.
- A failure of ``run`` becomes the exception of every future of that batch,
  and only of that batch; the worker carries on.
- With ``fixed_batch`` (a model exported at a fixed batch) every call of
  ``run`` gets exactly ``fixed_batch`` samples: batches are padded and cut by
  ``edgekit.batching.run_in_chunks``.
- Callers must not modify a request's arrays until its future is resolved;
  the rows handed back may be views of the batch's output arrays.

No torch and no runtime here: numpy, the standard library and edgekit's
batching helpers only.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from edgekit.batching import run_in_chunks
from edgekit.errors import InputError

Feeds = dict[str, np.ndarray]
Signature = tuple[tuple[str, tuple[int, ...], str], ...]


@dataclass(slots=True)
class _Request:
    feeds: Feeds
    rows: int
    signature: Signature
    arrived: float
    future: concurrent.futures.Future[list[np.ndarray]]


def _validate(max_batch: int, max_wait_ms: float, fixed_batch: int | None) -> None:
    def whole(value: object) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not whole(max_batch) or max_batch < 1:
        raise InputError(f"max_batch must be a whole number >= 1, not {max_batch!r}",
                         "Pass max_batch=1 (no batching) or more")
    if not isinstance(max_wait_ms, (int, float)) or not math.isfinite(max_wait_ms) or max_wait_ms < 0:
        raise InputError(f"max_wait_ms must be a finite number >= 0, not {max_wait_ms!r}",
                         "Pass max_wait_ms=0 (never wait for a batch to fill) or a few milliseconds, e.g. 2")
    if fixed_batch is not None and (not whole(fixed_batch) or fixed_batch < 1):
        raise InputError(f"fixed_batch must be None or a whole number >= 1, not {fixed_batch!r}",
                         "Pass the batch the model was exported with, or None for a dynamic batch")


def _request(feeds: Feeds) -> _Request:
    """A queued request, after checking the feeds share one leading sample axis."""
    if not isinstance(feeds, dict) or not feeds:
        raise InputError("a micro-batcher request must be a non-empty dict of input name to array",
                         "Submit {'input_name': array} with a leading sample axis")
    arrays = {name: value if type(value) is np.ndarray else np.asarray(value) for name, value in feeds.items()}
    counts = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
    if len(counts) != 1 or min(counts) < 1:
        shapes = ", ".join(f"{name} {a.shape}" for name, a in arrays.items())
        raise InputError(f"every input of a request needs the same leading sample axis of >= 1 rows; got {shapes}",
                         "Add the sample axis, e.g. x[None] for one sample")
    signature = tuple((name, a.shape[1:], a.dtype.str) for name, a in arrays.items())
    if len(signature) > 1:  # the same inputs given in another order are the same signature
        signature = tuple(sorted(signature))
    return _Request(arrays, counts.pop(), signature, time.monotonic(), concurrent.futures.Future())


class MicroBatcher:
    """Collects single requests from many threads into batches of at most max_batch, waiting at most max_wait_ms
    for a batch to fill; runs them with one call of `run`; hands each caller its own rows."""

    def __init__(self, run: Callable[[Feeds], list[np.ndarray]], *, max_batch: int = 8, max_wait_ms: float = 2.0,
                 fixed_batch: int | None = None) -> None:
        _validate(max_batch, max_wait_ms, fixed_batch)
        self._run = run
        self.max_batch = int(max_batch)
        self.max_wait_ms = float(max_wait_ms)
        self.fixed_batch = None if fixed_batch is None else int(fixed_batch)
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._queued_rows: Counter[Signature] = Counter()  # rows waiting, per signature: "is a batch full?"
        self._closed = False
        self._sizes: Counter[int] = Counter()  # samples per call, before padding
        self._requests = 0
        self._failed = 0
        self._padded = 0
        self._worker = threading.Thread(target=self._serve, name="edgekit-micro-batcher", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------- callers

    def submit(self, feeds: Feeds) -> concurrent.futures.Future[list[np.ndarray]]:
        """Queue one request; its future resolves to the outputs of its own rows (or the batch's exception)."""
        request = _request(feeds)
        with self._cond:
            if self._closed:
                raise InputError("this micro-batcher is closed and takes no more requests",
                                 "Submit before close(), or make a new MicroBatcher")
            self._pending.append(request)
            self._queued_rows[request.signature] += request.rows
            # Wake the worker only when it can act: it was idle, or a batch just filled. Otherwise it is
            # already waiting out the oldest request's deadline and would find nothing new to do.
            if len(self._pending) == 1 or self._queued_rows[request.signature] >= self.max_batch:
                self._cond.notify()
        return request.future

    def __call__(self, feeds: Feeds) -> list[np.ndarray]:
        """Submit ``feeds`` and wait for its outputs (raises the batch's exception)."""
        return self.submit(feeds).result()

    def stats(self) -> dict[str, float]:
        """Counts so far: batches (calls of ``run``), requests, samples, mean_batch_size (samples per batch),
        failed_batches, padded_samples (rows added for ``fixed_batch``) and ``batches_of_<n>`` per batch size."""
        with self._cond:
            batches = sum(self._sizes.values())
            samples = sum(size * count for size, count in self._sizes.items())
            figures = {
                "batches": float(batches),
                "requests": float(self._requests),
                "samples": float(samples),
                "mean_batch_size": samples / batches if batches else 0.0,
                "failed_batches": float(self._failed),
                "padded_samples": float(self._padded),
            }
            figures.update({f"batches_of_{size}": float(n) for size, n in sorted(self._sizes.items())})
        return figures

    def close(self) -> None:
        """Run every queued request, then stop the worker. Idempotent; later submits raise InputError."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._worker:  # close() from inside run() must not join itself
            self._worker.join()

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------- worker

    def _serve(self) -> None:
        """The worker: take the next batch, run it, repeat until closed and drained."""
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if batch:
                    self._execute(batch)
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            with self._cond:
                self._closed = True
                stranded = list(self._pending)
                self._pending.clear()
            for request in stranded:
                if request.future.set_running_or_notify_cancel():
                    request.future.set_exception(exc)
            raise

    def _next_batch(self) -> list[_Request] | None:
        """Block until a batch is due; None once closed with nothing queued. No busy-waiting: the
        Condition's timed wait sleeps until the oldest request's deadline or a submit that fills a batch."""
        max_wait_s = self.max_wait_ms / 1e3
        with self._cond:
            while True:
                if not self._pending:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                full = next((r.signature for r in self._pending if self._queued_rows[r.signature] >= self.max_batch),
                            None)
                head = self._pending[0]
                # Closed: nothing more can arrive, so waiting would only delay the drain.
                remaining = 0.0 if self._closed else head.arrived + max_wait_s - time.monotonic()
                if full is not None or remaining <= 0:
                    return self._take(head.signature if full is None else full)
                self._cond.wait(remaining)

    def _take(self, signature: Signature) -> list[_Request]:
        """Remove and return the oldest requests of ``signature`` that fit ``max_batch`` (at least one).

        Stops at the first request that does not fit, so requests of a signature run in arrival order.
        Cancelled futures are dropped. Called with the lock held.
        """
        batch: list[_Request] = []
        rows = 0
        kept: deque[_Request] = deque()
        taking = True
        for request in self._pending:
            if taking and request.signature == signature and (not batch or rows + request.rows <= self.max_batch):
                batch.append(request)
                rows += request.rows
            else:
                taking = taking and request.signature != signature
                kept.append(request)
        self._pending = kept
        self._queued_rows[signature] -= rows
        if self._queued_rows[signature] <= 0:
            del self._queued_rows[signature]
        return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _execute(self, batch: list[_Request]) -> None:
        """One call of ``run`` for the whole batch; each future gets its rows, or the batch's exception."""
        total = sum(r.rows for r in batch)
        try:
            if len(batch) == 1:
                feeds = batch[0].feeds
            else:
                feeds = {name: np.concatenate([r.feeds[name] for r in batch]) for name in batch[0].feeds}
            if self.fixed_batch is None:
                outputs = [np.asarray(o) for o in self._run(feeds)]
            else:
                outputs = run_in_chunks(self._run, feeds, self.fixed_batch)
            for index, output in enumerate(outputs):
                if output.ndim == 0 or len(output) != total:
                    raise InputError(
                        f"run returned output {index} with shape {output.shape} for a batch of {total} samples",
                        "Give the micro-batcher a run function whose every output keeps the sample axis")
        except Exception as exc:
            self._record(batch, total, failed=True)
            for request in batch:
                request.future.set_exception(exc)
            return
        self._record(batch, total, failed=False)
        start = 0
        for request in batch:
            stop = start + request.rows
            request.future.set_result([o[start:stop] for o in outputs])
            start = stop

    def _record(self, batch: list[_Request], total: int, failed: bool) -> None:
        with self._cond:
            self._sizes[total] += 1
            self._requests += len(batch)
            self._failed += failed
            if self.fixed_batch is not None:
                self._padded += -total % self.fixed_batch
