"""DDPM and DDIM sampling loops, each one `lax.scan` over the (respaced) schedule."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ditjax.diffusion.gaussian import at_timestep, p_mean_variance, predict_eps_from_xstart
from ditjax.diffusion.schedule import Diffusion

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def step_noise(key: jax.Array, i: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal noise `shape` (N, ...) for step i.

    One key: drawn from fold_in(key, i). Per-sample keys (N,): row n is drawn from
    fold_in(key[n], i), so it depends on nothing but key[n] (not on N or the sharding).
    """
    if key.ndim == 0:
        return jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32)
    if key.shape != shape[:1]:
        raise ValueError(f"per-sample keys have shape {key.shape}; expected {shape[:1]}")

    def draw(k: jax.Array) -> jax.Array:
        return jax.random.normal(jax.random.fold_in(k, i), shape[1:], jnp.float32)

    return jax.vmap(draw)(key)


def _model_posterior(d: Diffusion, model_fn: ModelFn, x: jax.Array, i: jax.Array, clip: bool):
    t = jnp.full((x.shape[0],), i, dtype=jnp.int32)
    output = model_fn(x, jnp.take(d.timestep_map, t))
    return t, p_mean_variance(d, output, x, t, clip_denoised=clip)


def p_sample_loop(
    d: Diffusion,
    model_fn: ModelFn,
    noise: jax.Array,
    key: jax.Array,
    *,
    clip_denoised: bool = False,
) -> jax.Array:
    """Ancestral (DDPM) sampling from x_T = `noise` (N, H, W, C) down to x_0.

    Step i draws its noise from fold_in(key, i), or per sample from fold_in(key[n], i)
    when `key` holds one key per sample (N,); the last step adds none.
    """

    def step(x, i):
        t, out = _model_posterior(d, model_fn, x, i, clip_denoised)
        z = step_noise(key, i, x.shape)
        nonzero = (t != 0).astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
        return out["mean"] + nonzero * jnp.exp(0.5 * out["log_variance"]) * z, None

    steps = jnp.arange(d.num_timesteps - 1, -1, -1)
    x, _ = jax.lax.scan(step, noise.astype(jnp.float32), steps)
    return x


def ddim_sample_loop(
    d: Diffusion,
    model_fn: ModelFn,
    noise: jax.Array,
    *,
    eta: float = 0.0,
    key: jax.Array | None = None,
    clip_denoised: bool = False,
) -> jax.Array:
    """DDIM sampling from `noise` (N, H, W, C); deterministic for eta = 0 (then key unused).

    `key` is one key or one per sample (N,), as in `p_sample_loop`.
    """
    if eta != 0.0 and key is None:
        raise ValueError("ddim_sample_loop needs a key when eta != 0")

    def step(x, i):
        t, out = _model_posterior(d, model_fn, x, i, clip_denoised)
        eps = predict_eps_from_xstart(d, x, t, out["pred_xstart"])
        alpha_bar = at_timestep(d.alphas_cumprod, t, x.ndim)
        alpha_bar_prev = at_timestep(d.alphas_cumprod_prev, t, x.ndim)
        sigma = (
            eta
            * jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar))
            * jnp.sqrt(1 - alpha_bar / alpha_bar_prev)
        )
        mean = (
            out["pred_xstart"] * jnp.sqrt(alpha_bar_prev)
            + jnp.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        )
        if eta == 0.0:
            return mean, None
        z = step_noise(key, i, x.shape)
        nonzero = (t != 0).astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
        return mean + nonzero * sigma * z, None

    steps = jnp.arange(d.num_timesteps - 1, -1, -1)
    x, _ = jax.lax.scan(step, noise.astype(jnp.float32), steps)
    return x
