"""Run by test_sample_npz.py in a subprocess with 4 fake CPU devices.

argv: RUN_DIR OUT_NPZ LATENTS_NPZ IMAGES_DIR. Runs `python -m ditjax.sample` in FID mode
(per_device_batch 1, so chunks of 4), then saves float latents of samples 0..7 made by
`make_sample_fn` with per-sample keys, sharded over the 4 devices.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax
import numpy as np

from ditjax import sample
from ditjax.parallel import batch_sharding, create_mesh

sys.path.insert(0, os.path.dirname(__file__))
from sampling_fixtures import latents

SAMPLE_FLAGS = ["--num_samples=10", "--per_device_batch=1", "--sampler=ddpm", "--steps=4"]

if __name__ == "__main__":
    run_dir, out, latents_out, images_dir = sys.argv[1:]
    assert jax.device_count() == 4
    argv = ["sample", f"--checkpoint={run_dir}", f"--out={out}", f"--images_dir={images_dir}"]
    sample.flags.FLAGS(argv + SAMPLE_FLAGS)
    sample.main(argv[:1])
    sharding = batch_sharding(create_mesh((-1, 1)))
    np.save(latents_out, latents(run_dir, np.arange(8), sharding))
