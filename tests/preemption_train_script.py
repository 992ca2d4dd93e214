"""Run by test_preemption.py: `python -m ditjax.train`'s main on CPU, with test hooks.

Usage: preemption_train_script.py HOOKS_JSON [ditjax.train flags...]

HOOKS_JSON (all keys optional):
  marker_dir      where the markers below are written and `go` is looked for
  hold_at         after step `hold_at`, write `<marker_dir>/held-<process>` and wait for `go`
  pace_s          after the hold, sleep this long at every step until the stop
  signal_in_save  steps whose checkpoint save sends this process a SIGTERM from Orbax's
                  commit thread, while the save is in flight (`<marker_dir>/signalled-<step>`);
                  one process only: the next step waits until the handler has seen it
  signal_in_stop_save  the same for the save of the step the run stops at (every process)
  state_out       .npz that process 0 writes the final state to (params, EMA, opt, step, rng)
Prints a JSON line with process, step and preempted after the run.
"""

import json
import os
import pathlib
import signal
import sys
import time

DEVICES = os.environ.get("FAKE_DEVICES", "1")
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import app
from jax.experimental import multihost_utils

from ditjax import train
from ditjax.training.preemption import PreemptionWatcher

HOOKS = json.loads(sys.argv[1])
MARKERS = pathlib.Path(HOOKS.get("marker_dir", "."))
_current_step = [0]
_stop_step = [None]


def _wait_for(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come within {timeout_s} s")
        time.sleep(0.02)


class HookedWatcher(PreemptionWatcher):
    """The real watcher; records the step and holds or paces the run as HOOKS say."""

    def should_stop(self, step: int) -> bool:
        if step - 1 in HOOKS.get("signal_in_save", ()):
            _wait_for(self._requested.is_set, "the SIGTERM sent during the save")
        stop = super().should_stop(step)
        _current_step[0] = step
        if stop:
            _stop_step[0] = step
        hold_at = HOOKS.get("hold_at")
        if hold_at is not None and step == hold_at and not stop:
            (MARKERS / f"held-{jax.process_index()}").write_text(str(step))
            _wait_for((MARKERS / "go").exists, "the go marker")
        elif hold_at is not None and step > hold_at and not stop:
            time.sleep(HOOKS.get("pace_s", 0.0))
        return stop


class _SignalOnResult:
    """A commit future of the state item: waited for in Orbax's background commit thread."""

    def __init__(self, step: int):
        self.step = step

    def result(self, timeout=None):
        del timeout
        (MARKERS / f"signalled-{self.step}").write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGTERM)


_original_async_save = ocp.StandardCheckpointHandler.async_save


async def _async_save_with_signal(self, directory, *args, **kwargs):
    futures = await _original_async_save(self, directory, *args, **kwargs)
    step = _current_step[0]
    stopping = HOOKS.get("signal_in_stop_save") and step == _stop_step[0]
    if step in HOOKS.get("signal_in_save", ()) or stopping:
        futures = [*(futures or []), _SignalOnResult(step)]
    return futures


ocp.StandardCheckpointHandler.async_save = _async_save_with_signal
_original_train = train.train_and_evaluate


def _train_and_report(*args, **kwargs):
    result = _original_train(*args, **kwargs)
    state = result.state
    host = {
        "params": state.params,
        "ema": state.ema_params,
        "opt": state.opt_state,
        "step": state.step,
        "rng": state.rng,
    }
    gathered = jax.tree.map(
        lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), host
    )
    if "state_out" in HOOKS and jax.process_index() == 0:
        leaves = jax.tree_util.tree_flatten_with_path(gathered)[0]
        np.savez(HOOKS["state_out"], **{jax.tree_util.keystr(k): v for k, v in leaves})
    report = {"process": jax.process_index(), "step": result.step, "preempted": result.preempted}
    print(json.dumps(report), flush=True)
    return result


train.train_and_evaluate = _train_and_report
train.PreemptionWatcher = HookedWatcher

if __name__ == "__main__":
    app.run(train.main, argv=[sys.argv[0], *sys.argv[2:]])
