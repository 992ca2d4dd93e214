"""The pixel-space autoencoder: the latent is the image itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# exp(-30 / 2) ~ 3e-7: a posterior sample equals the mean to float32 precision.
IDENTITY_LOGVAR = -30.0


class IdentityAutoencoder:
    """Runs DiT in pixel space: 3 latent channels, no downsampling, scale 1."""

    name = "identity"
    latent_channels = 3
    downsample = 1
    scale = 1.0

    def encode(self, images: jax.Array) -> jax.Array:
        """Images (N, H, W, 3) in [-1, 1] -> moments (N, H, W, 6): the image, then a constant
        log-variance of -30."""
        images = images.astype(jnp.float32)
        return jnp.concatenate([images, jnp.full_like(images, IDENTITY_LOGVAR)], axis=-1)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Latents (N, H, W, 3) -> images (N, H, W, 3) clipped to [-1, 1]."""
        return jnp.clip(latents.astype(jnp.float32), -1.0, 1.0)
