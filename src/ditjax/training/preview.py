"""Preview grids: EMA samples for fixed labels and noise, decoded to a PNG."""

from __future__ import annotations

from collections.abc import Callable

import jax

from ditjax.models import DiT
from ditjax.sampling import make_image_sample_fn


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
    return make_image_sample_fn(
        model,
        autoencoder,
        latent_shape=latent_shape,
        sampler=sampler,
        steps=steps,
        cfg_scale=cfg_scale,
        diffusion_steps=diffusion_steps,
    )
