"""The Stable Diffusion VAE (sd-vae-ft-ema / sd-vae-ft-mse) as a ditjax autoencoder."""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp

from ditjax.autoencoder.sd_vae_layers import SDVAE, SDVAEConfig
from ditjax.convert.diffusers_vae import (
    diffusers_vae_params,
    infer_sd_vae_config,
    read_diffusers_vae,
)


class SDVAEAutoencoder:
    """A KL autoencoder with loaded params; `encode` and `decode` are jitted and jittable.

    Latents are in the VAE's own units: multiply `decode`'s input by `scale` to get the
    unit-variance latents a diffusion model is trained on, and divide by it to decode them.
    """

    name: str = "sd-vae"

    def __init__(
        self, params: Any, config: SDVAEConfig | None = None, dtype: Any = jnp.float32
    ) -> None:
        self.config = config or SDVAEConfig()
        self.module = SDVAE(self.config, dtype=dtype)
        self.params = jax.tree.map(jnp.asarray, params)
        self._encode = jax.jit(functools.partial(self.module.apply, method="encode"))
        self._decode = jax.jit(functools.partial(self.module.apply, method="decode"))

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def downsample(self) -> int:
        return self.config.downsample_factor

    @property
    def scale(self) -> float:
        return float(self.config.scaling_factor)

    def encode(self, images: jax.Array) -> jax.Array:
        """Images (N, H, W, 3) in [-1, 1] -> moments (N, H/8, W/8, 2C): mean, logvar.

        logvar is clipped to [-30, 20]. H and W must be multiples of `downsample`.
        """
        return self._encode({"params": self.params}, images)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Latents (N, h, w, C) in the VAE's own units -> images (N, 8h, 8w, 3), nominally
        in [-1, 1] (not clipped)."""
        return self._decode({"params": self.params}, latents)


def load_sd_vae(
    path: str | pathlib.Path, dtype: Any = jnp.float32, **config_overrides: Any
) -> SDVAEAutoencoder:
    """The diffusers `AutoencoderKL` at `path` (file, VAE directory or pipeline directory).

    Weights come from `diffusion_pytorch_model.safetensors` (or `.bin`, which needs torch); the
    architecture from `config.json` beside them when present, else from the weights' shapes
    with the sd-vae-ft-ema defaults for the rest (32 norm groups, scale 0.18215).
    `dtype` is the compute dtype; params and GroupNorm statistics stay float32.
    """
    state_dict, diffusers_config = read_diffusers_vae(path)
    if diffusers_config is None:
        config = infer_sd_vae_config(state_dict, **config_overrides)
    else:
        config = SDVAEConfig.from_diffusers(diffusers_config, **config_overrides)
    params = diffusers_vae_params(state_dict, config)
    return SDVAEAutoencoder(params, config, dtype=dtype)
