"""The small-folder recipe (configs/small.py) on the embedded demo set (16 x 16 pixels): the
same model and optimisation, at most 12000 steps or 5 minutes of training, so that `make demo`
(install, data, training, sampling, scoring) fits in 10 minutes on 2 cores."""

import pathlib
import runpy

_SMALL = runpy.run_path(str(pathlib.Path(__file__).with_name("small.py")))


def get_config():
    config = _SMALL["get_config"]()
    config.dataset_dir = "demo_run/latents16_v2"
    config.image_size = 16  # the size the demo extracts at; latent shape and classes: the dataset's
    # The limit keeps the whole demo under 10 minutes; a 2-core machine doing 24 steps/s stopped
    # at step 7190 of the 12000 (6 min 21 s for `make demo`, install included), where every
    # shape, thin ones included, is already recognisable (Min-SNR: see configs/small.py).
    config.time_limit_minutes = 5.0
    return config
