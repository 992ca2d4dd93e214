"""A process killed during an asynchronous save leaves the previous checkpoint usable."""

import pathlib
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ditjax.training.checkpoint import Checkpointer

SCRIPT = str(pathlib.Path(__file__).with_name("kill_mid_save_script.py"))


@pytest.mark.slow
def test_kill_during_async_save_keeps_previous_checkpoint(tmp_path):
    directory = tmp_path / "checkpoints"
    out = subprocess.run(
        [sys.executable, SCRIPT, str(directory)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == -signal.SIGKILL and "saving" in out.stdout
    leftovers = [p.name for p in directory.iterdir()]
    assert "1" in leftovers
    checkpointer = Checkpointer(str(directory), keep=5)
    try:
        assert checkpointer.all_steps() == [1]  # the interrupted step 2 is not a checkpoint
        target = {
            "step": jax.ShapeDtypeStruct((), jnp.int32),
            "small": jax.ShapeDtypeStruct((10,), jnp.float32),
            "big": jax.ShapeDtypeStruct((1000,), jnp.float32),
        }
        step, restored = checkpointer.restore_latest_good(target, data_iterator=None)
        assert step == 1 and int(restored["step"]) == 1
        np.testing.assert_array_equal(restored["small"], np.arange(10) + 1.0)
    finally:
        checkpointer.close()
