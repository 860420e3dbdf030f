"""Feeding any number of samples to a model that only takes a fixed batch.

A ``torch.export`` program saved without a dynamic batch runs at exactly the
batch it was exported with, and so does every artifact made from it. Sessions
take any number of samples (their contract); this helper cuts them into chunks
of the fixed batch, pads the last chunk by repeating its final sample, and
drops the padded rows from the outputs. No torch, no runtime here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Feeds = dict[str, np.ndarray]


def fixed_batch_of(shapes: list[tuple[int | None, ...]]) -> int | None:
    """The batch every input is fixed to (their first dims, all equal ints), or None when any is dynamic."""
    firsts = {shape[0] if shape else None for shape in shapes}
    if len(firsts) != 1:
        return None
    (first,) = firsts
    return first if isinstance(first, int) and first > 0 else None


def pad_to(feeds: Feeds, batch: int) -> tuple[Feeds, int]:
    """``feeds`` with the sample axis padded to ``batch`` rows (repeating the last sample), and the real count."""
    count = len(next(iter(feeds.values())))
    if count == batch:
        return feeds, count
    return {k: np.concatenate([v, np.repeat(v[-1:], batch - count, axis=0)]) for k, v in feeds.items()}, count


def run_in_chunks(run: Callable[[Feeds], list[np.ndarray]], feeds: Feeds, batch: int) -> list[np.ndarray]:
    """Run ``feeds`` through ``run`` (which only takes ``batch`` samples) in padded chunks; concatenated outputs."""
    total = len(next(iter(feeds.values())))
    parts: list[list[np.ndarray]] = []
    for start in range(0, total, batch):
        chunk, real = pad_to({k: v[start : start + batch] for k, v in feeds.items()}, batch)
        outputs = run(chunk)
        if not parts:
            parts = [[] for _ in outputs]
        for slot, out in zip(parts, outputs, strict=True):
            slot.append(np.asarray(out)[:real])
    return [np.concatenate(p) for p in parts]
