"""Preview grids: EMA samples for fixed labels and noise, decoded to a PNG."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ditjax.models import DiT
from ditjax.sampling import make_sample_fn, to_uint8


def parse_sampler_spec(spec: str) -> tuple[str, int]:
    """'ddim50' -> ('ddim', 50); '250' -> ('ddpm', 250)."""
    if spec.startswith("ddim"):
        return "ddim", int(spec[len("ddim") :])
    return "ddpm", int(spec)


def make_preview_fn(
    model: DiT,
    autoencoder,
    *,
    latent_shape: tuple[int, int, int],
    sampler_spec: str,
    cfg_scale: float,
    diffusion_steps: int = 1000,
) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
    """`preview(params, labels, key) -> uint8 images (N, H, W, 3)`, jitted end to end."""
    sampler, steps = parse_sampler_spec(sampler_spec)
    sample = make_sample_fn(
        model,
        latent_shape=latent_shape,
        sampler=sampler,
        steps=steps,
        cfg_scale=cfg_scale,
        diffusion_steps=diffusion_steps,
    )

    @jax.jit
    def preview(params, labels, key):
        latents = sample(params, labels, key)
        return to_uint8(autoencoder.decode(latents / autoencoder.scale))

    return preview


def preview_labels(labels, repeats: int = 1) -> jnp.ndarray:
    """The configured labels, repeated `repeats` times, as int32 (N,)."""
    return jnp.asarray(np.tile(np.asarray(labels, np.int32), repeats))
