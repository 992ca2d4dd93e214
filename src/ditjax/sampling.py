"""Class-conditional sampling from a DiT: a pure function of (params, labels, key)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ditjax.diffusion import (
    create_diffusion,
    ddim_sample_loop,
    guided_model_fn,
    p_sample_loop,
)
from ditjax.models import DiT

SAMPLERS = ("ddpm", "ddim")


def make_sample_fn(
    model: DiT,
    *,
    latent_shape: tuple[int, int, int],
    sampler: str = "ddpm",
    steps: int = 250,
    cfg_scale: float = 1.0,
    guidance_mode: str = "all",
    eta: float = 0.0,
    diffusion_steps: int = 1000,
) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
    """`sample(params, labels (N,), key) -> latents (N, h, w, C)` in the model's units.

    The whole loop is one program; jit it (with shardings if wanted) at the call site.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if steps < 1 or steps > diffusion_steps:
        raise ValueError(f"steps must be in [1, {diffusion_steps}], got {steps}")
    if cfg_scale < 1.0:
        raise ValueError(f"cfg_scale must be >= 1, got {cfg_scale}")
    respacing = f"ddim{steps}" if sampler == "ddim" else str(steps)
    diffusion = create_diffusion(
        respacing, learn_sigma=model.learn_sigma, diffusion_steps=diffusion_steps
    )

    def sample(params: dict, labels: jax.Array, key: jax.Array) -> jax.Array:
        def conditional(x, t, y):
            return model.apply({"params": params}, x, t, y)

        model_fn = guided_model_fn(
            conditional,
            labels,
            model.num_classes,
            cfg_scale,
            channels=latent_shape[-1],
            mode=guidance_mode,
        )
        noise_key, loop_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, (labels.shape[0], *latent_shape), jnp.float32)
        if sampler == "ddim":
            return ddim_sample_loop(diffusion, model_fn, noise, eta=eta, key=loop_key)
        return p_sample_loop(diffusion, model_fn, noise, loop_key)

    return sample


def make_image_sample_fn(
    model: DiT, autoencoder, **sample_options
) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
    """`sample(params, labels (N,), key) -> uint8 images (N, H, W, 3)`: the sampling loop and
    the decoder as one jitted program. `sample_options` are those of `make_sample_fn`."""
    sample_latents = make_sample_fn(model, **sample_options)

    @jax.jit
    def sample(params: dict, labels: jax.Array, key: jax.Array) -> jax.Array:
        latents = sample_latents(params, labels, key)
        return to_uint8(autoencoder.decode(latents / autoencoder.scale))

    return sample


def to_uint8(images: jax.Array) -> jax.Array:
    """Images in [-1, 1] (N, H, W, 3) -> uint8 (N, H, W, 3), rounding as the reference does."""
    return jnp.clip(127.5 * images + 128.0, 0, 255).astype(jnp.uint8)
