"""A small class-conditional DiT on the embedded demo set (16 x 16 pixels), on a CPU."""

import pathlib
import runpy

_BASE = runpy.run_path(str(pathlib.Path(__file__).with_name("base.py")))


def get_config():
    config = _BASE["get_config"]()
    config.model = "DiT-S/2"
    config.model_overrides.hidden_size = 128
    config.model_overrides.depth = 4
    config.model_overrides.num_heads = 4
    config.dtype = "float32"
    config.dataset_dir = "demo_run/latents16"
    config.image_size = 16  # the size the demo extracts at; latent shape and classes: the dataset's
    config.autoencoder = "identity"
    config.global_batch_size = 64
    config.learning_rate = 2e-3
    config.warmup_steps = 100
    config.ema_decay = 0.998
    config.total_steps = 2000
    config.log_every = 100
    config.checkpoint_every = 500
    config.keep_checkpoints = 2
    config.keep_every = 0
    config.sample_every = 1000
    config.preview_sampler = "ddim25"
    config.preview_cfg_scale = 4.0
    return config
