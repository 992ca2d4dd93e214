"""DevicePrefetcher: batches in order, each with the iterator position after it."""

import json

import pytest

from ditjax.training.prefetch import DevicePrefetcher


class CountingIterator:
    """Yields 0, 1, 2, ...; its state is the number of batches read so far."""

    def __init__(self, fail_at: int | None = None):
        self.read = 0
        self.fail_at = fail_at

    def __next__(self) -> int:
        if self.read == self.fail_at:
            raise OSError(f"record {self.read} is unreadable")
        self.read += 1
        return self.read - 1

    def get_state(self) -> dict:
        return {"read": self.read}


def test_batches_come_in_order_with_the_position_after_each():
    iterator = CountingIterator()
    batches = DevicePrefetcher(iterator, lambda b: ("on device", b), num_batches=5, depth=2)
    got = list(batches)
    batches.close()
    assert [batch for batch, _ in got] == [("on device", i) for i in range(5)]
    # A checkpoint after batch i records i + 1 batches read, whatever was read ahead.
    assert [json.loads(p.get_state()) for _, p in got] == [{"read": i + 1} for i in range(5)]
    assert iterator.read == 5  # never reads past the batches asked for


def test_reads_ahead_at_most_depth_batches_and_close_stops_it():
    iterator = CountingIterator()
    batches = DevicePrefetcher(iterator, lambda b: b, num_batches=100, depth=2)
    assert next(batches)[0] == 0
    batches.close()
    assert iterator.read <= 4  # one taken, two queued, one waiting to be queued


def test_an_error_in_the_reader_reaches_the_consumer():
    batches = DevicePrefetcher(CountingIterator(fail_at=2), lambda b: b, num_batches=5)
    assert [next(batches)[0] for _ in range(2)] == [0, 1]
    with pytest.raises(OSError, match="record 2 is unreadable"):
        next(batches)
    batches.close()
    with pytest.raises(ValueError, match="depth"):
        DevicePrefetcher(CountingIterator(), lambda b: b, num_batches=1, depth=0)
