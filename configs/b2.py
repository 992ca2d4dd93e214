"""DiT-B/2 on 256 x 256 ImageNet latents (SD VAE)."""

import pathlib
import runpy

_BASE = runpy.run_path(str(pathlib.Path(__file__).with_name("base.py")))


def get_config():
    config = _BASE["get_config"]()
    config.model = "DiT-B/2"
    config.dataset_dir = "data/imagenet256_latents"
    config.autoencoder = "sd-vae:checkpoints/sd-vae-ft-ema"
    return config
