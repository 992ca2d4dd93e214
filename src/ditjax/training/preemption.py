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
    point. `jax.distributed.initialize` installs a SIGTERM handler (in C++) on every
    process; a SIGTERM to any one of them makes every process reach the sync point at the
    same step, the largest step any process had reached plus one. `should_stop` must be
    called once per step on every process, with the same steps.

    Once a stop is under way, further SIGTERMs are logged and ignored, so that a repeated
    notice cannot kill the process while it saves. `close()` puts back the handler that was
    there before, unless `restore_on_close` is False (the process is about to exit and
    should not die of a late SIGTERM) or the run has several processes (JAX's own handler,
    once replaced, cannot be put back; a SIGTERM after the stop stays harmless).
    """

    def __init__(self, *, restore_on_close: bool = True) -> None:
        self._requested = threading.Event()
        self._stopping = False
        self._closed = False
        self._installed = False
        self._previous = None
        self._restore_on_close = restore_on_close
        self._multiprocess = jax.process_count() > 1
        self._sync_point_missing = False
        if not self._multiprocess:
            self._install()

    def _install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        self._installed = True

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        if self._closed:
            logging.warning("received signal %d after the run ended; ignored", signum)
        elif self._stopping or self._requested.is_set():
            logging.warning(
                "received signal %d again; the stop is already under way, ignored", signum
            )
        else:
            logging.warning("received signal %d; saving a checkpoint at the next step", signum)
        self._requested.set()

    def request(self) -> None:
        """Asks for a stop, as a preemption signal would (one process only: with several,
        only a SIGTERM reaches the sync point)."""
        self._requested.set()

    def should_stop(self, step: int) -> bool:
        """Whether the loop should save `step` and stop; once True, always True."""
        if self._stopping:
            return True
        stop = self._reached_sync_point(step) if self._multiprocess else self._requested.is_set()
        if stop:
            self._stopping = True
            # From here on a SIGTERM is only logged (JAX's handler goes silent after its first).
            self._install()
        return stop

    def _reached_sync_point(self, step: int) -> bool:
        if self._sync_point_missing:
            return False
        try:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        except RuntimeError as error:
            logging.warning(
                "JAX's preemption sync point is unavailable (%s); a SIGTERM will not stop "
                "this run at a checkpoint",
                error,
            )
            self._sync_point_missing = True
            return False

    def close(self) -> None:
        """Ends the watch (see the class docstring for what happens to the handler)."""
        self._closed = True
        if not self._installed or self._multiprocess or not self._restore_on_close:
            return
        if threading.current_thread() is threading.main_thread():
            previous = signal.SIG_DFL if self._previous is None else self._previous
            signal.signal(signal.SIGTERM, previous)
            self._installed = False
