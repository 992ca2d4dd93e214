"""Run by test_multiprocess.py: one process of a (possibly multi-process) CPU training run.

Usage: multiprocess_train_script.py DATASET WORKDIR MESH STEPS [PROCESS_ID NUM_PROCESSES PORT]
with MESH like 4x1. Prints a JSON line with the final step, loss and a params checksum.
"""

import json
import os
import sys

DEVICES = os.environ.get("FAKE_DEVICES", "2")
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax
import numpy as np

from ditjax.parallel import initialize_distributed
from ditjax.training.loop import train_and_evaluate

sys.path.insert(0, os.path.dirname(__file__))
from training_fixtures import tiny_config


def main(argv):
    dataset, workdir, mesh, steps = argv[1], argv[2], argv[3], int(argv[4])
    if len(argv) > 5:
        process_id, num_processes, port = int(argv[5]), int(argv[6]), argv[7]
        initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
    config = tiny_config()
    config.latent_size = 16
    config.dataset_dir = dataset
    config.global_batch_size = 8
    config.total_steps = steps
    config.log_every = 1
    config.checkpoint_every = 1
    config.sample_every = 0
    config.mesh_shape = tuple(int(v) for v in mesh.split("x"))
    result = train_and_evaluate(config, workdir)
    params = jax.tree.map(
        lambda x: np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True)),
        result.state.params,
    )
    checksum = float(sum(np.abs(leaf).astype(np.float64).sum() for leaf in jax.tree.leaves(params)))
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "processes": jax.process_count(),
                "devices": jax.device_count(),
                "step": result.step,
                "loss": result.metrics["loss"],
                "checksum": checksum,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv)
