"""A wall-clock budget for one training invocation, agreed on by every process."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils


class TimeLimit:
    """Tells the loop when `minutes` of wall-clock time have passed since it was made.

    0 minutes means no limit. One process checks the clock at every step. With several
    processes the clocks differ, so process 0 decides and broadcasts its answer, only at
    steps that are multiples of `check_every` (a collective at every step would cost more
    than it saves); every process must then call `reached` at the same steps.
    """

    def __init__(
        self,
        minutes: float,
        *,
        check_every: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if minutes < 0:
            raise ValueError(f"minutes must be >= 0 (0: no limit), got {minutes}")
        self.seconds = 60.0 * minutes
        self._clock = clock
        self._start = clock()
        self._multiprocess = jax.process_count() > 1
        self._check_every = max(1, check_every) if self._multiprocess else 1

    def elapsed(self) -> float:
        """Seconds since the budget started."""
        return self._clock() - self._start

    def reached(self, step: int) -> bool:
        """Whether the budget is spent at `step` (the loop then saves it and stops)."""
        if not self.seconds or step % self._check_every:
            return False
        spent = self.elapsed() >= self.seconds
        if self._multiprocess:
            spent = bool(multihost_utils.broadcast_one_to_all(np.int32(spent)))
        return spent
