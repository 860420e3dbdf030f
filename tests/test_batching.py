"""Feeding a fixed-batch model any number of samples."""

import numpy as np

from edgekit.batching import fixed_batch_of, pad_to, run_in_chunks


def test_fixed_batch_needs_every_input_fixed_to_the_same_int() -> None:
    assert fixed_batch_of([(4, 3), (4,)]) == 4
    assert fixed_batch_of([(None, 3)]) is None
    assert fixed_batch_of([(4, 3), (2, 3)]) is None


def test_chunks_are_padded_and_the_padding_dropped() -> None:
    seen = []

    def run(feeds):
        seen.append(len(feeds["x"]))
        assert len(feeds["x"]) == 4  # the model only takes its batch
        return [feeds["x"] * 2]

    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    (out,) = run_in_chunks(run, {"x": x}, 4)
    assert seen == [4, 4, 4] and np.array_equal(out, x * 2)
    padded, real = pad_to({"x": x[:3]}, 4)
    assert real == 3 and padded["x"][-1, 0] == 2.0
