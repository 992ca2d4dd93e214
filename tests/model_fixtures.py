"""Model parameters for tests: as initialised, and random ones where every product counts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def init_params(model, x, t, y, seed: int = 0):
    return model.init(jax.random.key(seed), x, t, y)["params"]


def randomize(params, seed: int = 0, scale: float = 0.1):
    """Every leaf replaced by normal * scale (float32); boxes removed."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: jnp.asarray(rng.standard_normal(a.shape) * scale, jnp.float32), nn.unbox(params)
    )
