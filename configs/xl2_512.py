"""DiT-XL/2 on 512 x 512 ImageNet latents (SD VAE), with rematerialised scanned blocks."""

import pathlib
import runpy

_BASE = runpy.run_path(str(pathlib.Path(__file__).with_name("base.py")))


def get_config():
    config = _BASE["get_config"]()
    config.model = "DiT-XL/2"
    config.image_size = 512
    config.latent_size = 64
    config.dataset_dir = "data/imagenet512_latents"
    config.autoencoder = "sd-vae:checkpoints/sd-vae-ft-ema"
    config.scan_blocks = True
    config.remat = "dots_with_no_batch_dims_saveable"
    return config
