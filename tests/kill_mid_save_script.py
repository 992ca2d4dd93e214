"""Run by test_faults.py: saves step 1, starts an async save of step 2, then is SIGKILLed.

Usage: kill_mid_save_script.py CHECKPOINT_DIR
"""

import os
import signal
import sys

import jax.numpy as jnp
import orbax.checkpoint as ocp

from ditjax.training.checkpoint import Checkpointer


def state(step: int, big: int):
    return {
        "step": jnp.asarray(step, jnp.int32),
        "small": jnp.arange(10, dtype=jnp.float32) + step,
        "big": jnp.full((big,), float(step), jnp.float32),
    }


def main(directory: str) -> None:
    checkpointer = Checkpointer(directory, keep=5)
    checkpointer.manager.save(1, args=_args(state(1, 1000)))
    checkpointer.wait()
    # A large step-2 state keeps the asynchronous write busy while the process is killed.
    checkpointer.manager.save(2, args=_args(state(2, 256 * 1024 * 1024)))
    print("saving", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _args(tree):
    return ocp.args.Composite(state=ocp.args.StandardSave(tree), config=ocp.args.JsonSave({}))


if __name__ == "__main__":
    main(sys.argv[1])
