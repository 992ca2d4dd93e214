"""Small training configs shared by the training tests."""

import pathlib
import runpy

CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
# What ditjax_latents.json records of the demo set at 16 px (identity autoencoder).
DEMO_INFO = {
    "latent_shape": [16, 16, 3],
    "image_size": 16,
    "num_classes": 10,
    "downsample": 1,
}


def imagenet_info(image_size: int) -> dict:
    """The description of ImageNet SD-VAE latents at `image_size` px."""
    side = image_size // 8
    return {"latent_shape": [side, side, 4], "image_size": image_size, "num_classes": 1000}


def load_config(name: str):
    """configs/<name>.py's get_config()."""
    return runpy.run_path(str(CONFIGS_DIR / f"{name}.py"))["get_config"]()


def tiny_config():
    """The demo config shrunk to a 2-block, 64-wide DiT on 8 x 8 x 3 latents."""
    config = load_config("demo")
    config.model = "DiT-S/4"
    config.model_overrides.hidden_size = 64
    config.model_overrides.depth = 2
    config.model_overrides.num_heads = 4
    config.latent_size = 8
    config.latent_channels = 3
    config.global_batch_size = 16
    config.warmup_steps = 0
    config.learning_rate = 1e-3
    config.time_limit_minutes = 0.0  # runs end at total_steps, whatever the machine
    return config
