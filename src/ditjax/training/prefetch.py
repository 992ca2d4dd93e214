"""Device prefetch: a background thread reads the next batches and puts them on the devices
while the current step runs, keeping the data position of every batch for checkpoints."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_POLL_S = 0.1


class IteratorPosition:
    """A data iterator's state after a given batch, frozen; grain's checkpoint handler saves
    it as it would save the iterator itself (the same JSON file)."""

    def __init__(self, state: Any):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state, indent=4).encode()


class DevicePrefetcher:
    """Yields (batch on device, IteratorPosition after that batch) for `num_batches` batches.

    A thread calls `next(iterator)` and `to_device` up to `depth` batches ahead, so reading,
    host-to-device transfer and the step overlap. Only that thread touches `iterator` until
    `close()`; an error there is raised by `__next__`.
    """

    def __init__(
        self,
        iterator: Iterator[Any],
        to_device: Callable[[Any], Any],
        num_batches: int,
        depth: int = 2,
    ):
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._remaining = num_batches
        self._thread = threading.Thread(
            target=self._fill, args=(iterator, to_device, num_batches), daemon=True
        )
        self._thread.start()

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, iterator: Iterator[Any], to_device: Callable[[Any], Any], count: int) -> None:
        try:
            for _ in range(count):
                batch = to_device(next(iterator))
                position = IteratorPosition(iterator.get_state())
                if not self._put(("batch", (batch, position))):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(("error", error))

    def __iter__(self) -> DevicePrefetcher:
        return self

    def __next__(self) -> tuple[Any, IteratorPosition]:
        if self._remaining <= 0:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "error":
            self._remaining = 0
            raise value
        self._remaining -= 1
        return value

    def close(self) -> None:
        """Stops the thread (dropping batches read ahead) and waits for it."""
        self._stop.set()
        self._thread.join()
