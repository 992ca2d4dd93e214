"""Stopping at a step boundary when the job is preempted (SIGTERM)."""

from __future__ import annotations

import logging
import signal
import threading
import types

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """Tells the loop when to save and stop; every process agrees on the step.

    One process: a SIGTERM handler sets a flag. Several processes: JAX's preemption sync
    point, which the coordination service set up by `jax.distributed.initialize` triggers
    on SIGTERM for every process at the same step.
    """

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._previous = None
        self._multiprocess = jax.process_count() > 1
        if not self._multiprocess and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        logging.warning("received signal %d; saving a checkpoint at the next step", signum)
        self._requested.set()

    def request(self) -> None:
        """Asks for a stop, as a preemption signal would."""
        self._requested.set()

    def should_stop(self, step: int) -> bool:
        if self._multiprocess:
            try:
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except RuntimeError:
                return False
        return self._requested.is_set()

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
