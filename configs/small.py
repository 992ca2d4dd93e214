"""Recipe for a small labelled image folder in pixel space, on a CPU or one GPU.

For folders of up to about 50K images of up to about 64 px: extract them at 16 px with the
identity autoencoder (`extract_latents --autoencoder=identity --image_size=16`); image size,
latent shape and classes then come from the dataset. A 4-block, 128-wide DiT-S/4 (4 x 4
patches: 16 tokens at 16 px) runs 4000 steps in about 11 minutes on 2 CPU cores (6-8 steps/s);
patch 2 (64 tokens) costs 3.7x more per step and did worse in the same time (mnist5k: 22%
class match after 14 minutes of patch 2, 44% after 11 of patch 4). Scaling up (a GPU, or
more time): `--config.model=DiT-S/2` at 16 px, then wider models
(`model_overrides.hidden_size=384`, `depth=12`: the full DiT-S/2), and raise `total_steps`;
keep the learning rate below about 1e-3 for the full-size models.
"""

import pathlib
import runpy

_BASE = runpy.run_path(str(pathlib.Path(__file__).with_name("base.py")))


def get_config():
    config = _BASE["get_config"]()
    config.model = "DiT-S/4"
    config.model_overrides.hidden_size = 128
    config.model_overrides.depth = 4
    config.model_overrides.num_heads = 4
    config.dtype = "float32"
    config.autoencoder = "identity"
    # Off: a mirrored digit or letter is another class (or none); turn on for photos.
    config.random_flip = False
    config.global_batch_size = 64
    config.learning_rate = 2e-3
    config.warmup_steps = 100
    # Short runs move fast: an EMA over the last ~100 steps (0.998 trailed the weights).
    config.ema_decay = 0.99
    config.total_steps = 4000
    config.log_every = 100
    config.checkpoint_every = 1000
    config.keep_checkpoints = 2
    config.keep_every = 0
    config.sample_every = 1000
    config.preview_sampler = "ddim25"
    config.preview_cfg_scale = 4.0
    return config
