"""The small-folder recipe (configs/small.py) on the embedded demo set (16 x 16 pixels): the
same model and optimisation, 2000 steps so that `make demo` fits in 10 minutes on 2 cores."""

import pathlib
import runpy

_SMALL = runpy.run_path(str(pathlib.Path(__file__).with_name("small.py")))


def get_config():
    config = _SMALL["get_config"]()
    config.dataset_dir = "demo_run/latents16_v2"
    config.image_size = 16  # the size the demo extracts at; latent shape and classes: the dataset's
    config.total_steps = 2000
    config.checkpoint_every = 500
    return config
