"""Class-conditional sampling from a DiT: a pure function of (params, labels, key)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import Sharding

from ditjax.diffusion import (
    create_diffusion,
    ddim_sample_loop,
    dpmpp_2m_sample_loop,
    guided_model_fn,
    p_sample_loop,
)
from ditjax.inference_compile import inference_compiler_options
from ditjax.models import DiT

SAMPLERS = ("ddpm", "ddim", "dpmpp2m")


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

    `key` is one key for the whole batch, or per-sample keys (N,): then sample n's initial
    and per-step noise come from key[n] alone, so it does not depend on N or the sharding.
    Samplers: "ddpm" (ancestral, `steps` respaced), "ddim" (eta), "dpmpp2m" (DPM-Solver++(2M),
    deterministic). The whole loop is one program; jit it at the call site, with shardings
    and `ditjax.inference_compile.inference_compiler_options()` (as `make_image_sample_fn`).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if steps < 1 or steps > diffusion_steps:
        raise ValueError(f"steps must be in [1, {diffusion_steps}], got {steps}")
    if cfg_scale < 1.0:
        raise ValueError(f"cfg_scale must be >= 1, got {cfg_scale}")
    respacing = {"ddim": f"ddim{steps}", "dpmpp2m": ""}.get(sampler, str(steps))
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
        noise, loop_key = initial_noise(key, (labels.shape[0], *latent_shape))
        if sampler == "dpmpp2m":
            return dpmpp_2m_sample_loop(diffusion, model_fn, noise, steps=steps)
        if sampler == "ddim":
            return ddim_sample_loop(diffusion, model_fn, noise, eta=eta, key=loop_key)
        return p_sample_loop(diffusion, model_fn, noise, loop_key)

    return sample


def initial_noise(key: jax.Array, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """(x_T (N, ...), the key(s) left for the sampling loop) from one key or per-sample keys."""
    if key.ndim == 0:
        noise_key, loop_key = jax.random.split(key)
        return jax.random.normal(noise_key, shape, jnp.float32), loop_key
    if key.shape != shape[:1]:
        raise ValueError(f"per-sample keys have shape {key.shape}; expected {shape[:1]}")

    def one(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        noise_key, loop_key = jax.random.split(k)
        return jax.random.normal(noise_key, shape[1:], jnp.float32), loop_key

    return jax.vmap(one)(key)


def make_image_sample_fn(
    model: DiT, autoencoder, *, out_sharding: Sharding | None = None, **sample_options
) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
    """`sample(params, labels (N,), key) -> uint8 images (N, H, W, 3)`: the sampling loop and
    the decoder as one jitted program, its output laid out as `out_sharding` when given.
    `sample_options` are those of `make_sample_fn`."""
    sample_latents = make_sample_fn(model, **sample_options)

    @partial(jax.jit, out_shardings=out_sharding, compiler_options=inference_compiler_options())
    def sample(params: dict, labels: jax.Array, key: jax.Array) -> jax.Array:
        latents = sample_latents(params, labels, key)
        return to_uint8(autoencoder.decode(latents / autoencoder.scale))

    return sample


def to_uint8(images: jax.Array) -> jax.Array:
    """Images in [-1, 1] (N, H, W, 3) -> uint8 (N, H, W, 3), rounding as the reference does."""
    return jnp.clip(127.5 * images + 128.0, 0, 255).astype(jnp.uint8)
