"""A cheap stand-in for the Inception network, and random uint8 image batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_PROJECTION = np.random.default_rng(0).normal(size=(48, 16 + 12 + 20)).astype(np.float32)


def stand_in_features(images: jax.Array) -> dict[str, jax.Array]:
    """{pool (B, 16), spatial (B, 12), logits (B, 20)} of uint8 images (B, 8, 8, 3): a fixed
    random projection of their 2 x 2 block means."""
    x = images.astype(jnp.float32) / 255.0
    blocks = x.reshape(x.shape[0], 4, 2, 4, 2, 3).mean(axis=(2, 4)).reshape(x.shape[0], 48)
    projected = blocks @ _PROJECTION
    return {
        "pool": jnp.tanh(projected[:, :16]),
        "spatial": projected[:, 16:28],
        "logits": 4.0 * projected[:, 28:],
    }


def random_images(seed: int, n: int, size: int = 8) -> np.ndarray:
    """uint8 (n, size, size, 3) uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
