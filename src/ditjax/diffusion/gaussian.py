"""Closed forms of the Gaussian diffusion: forward noising, posterior and model posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ditjax.diffusion.schedule import Diffusion


def at_timestep(values: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """values[t] for a batch t (N,), shaped (N, 1, ..., 1) to broadcast against rank `ndim`."""
    out = jnp.take(values, t, axis=0).astype(jnp.float32)
    return out.reshape(t.shape + (1,) * (ndim - 1))


def q_sample(d: Diffusion, x_start: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Samples x_t ~ q(x_t | x_0) for x_start and noise (N, ...), t (N,)."""
    nd = x_start.ndim
    return (
        at_timestep(d.sqrt_alphas_cumprod, t, nd) * x_start
        + at_timestep(d.sqrt_one_minus_alphas_cumprod, t, nd) * noise
    )


def q_posterior_mean_variance(
    d: Diffusion, x_start: jax.Array, x_t: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0)."""
    nd = x_start.ndim
    mean = (
        at_timestep(d.posterior_mean_coef1, t, nd) * x_start
        + at_timestep(d.posterior_mean_coef2, t, nd) * x_t
    )
    variance = at_timestep(d.posterior_variance, t, nd)
    log_variance = at_timestep(d.posterior_log_variance_clipped, t, nd)
    return mean, variance, log_variance


def predict_xstart_from_eps(d: Diffusion, x_t: jax.Array, t: jax.Array, eps: jax.Array):
    """x_0 implied by a noise prediction."""
    nd = x_t.ndim
    return (
        at_timestep(d.sqrt_recip_alphas_cumprod, t, nd) * x_t
        - at_timestep(d.sqrt_recipm1_alphas_cumprod, t, nd) * eps
    )


def predict_eps_from_xstart(d: Diffusion, x_t: jax.Array, t: jax.Array, pred_xstart: jax.Array):
    """Noise implied by an x_0 prediction."""
    nd = x_t.ndim
    return (at_timestep(d.sqrt_recip_alphas_cumprod, t, nd) * x_t - pred_xstart) / at_timestep(
        d.sqrt_recipm1_alphas_cumprod, t, nd
    )


def split_model_output(d: Diffusion, model_output: jax.Array, x_t: jax.Array):
    """(eps, variance values or None) from a channels-last model output."""
    channels = x_t.shape[-1]
    if d.learn_sigma:
        if model_output.shape[-1] != 2 * channels:
            raise ValueError(
                f"model output has {model_output.shape[-1]} channels; learned sigma needs "
                f"{2 * channels}"
            )
        return model_output[..., :channels], model_output[..., channels:]
    if model_output.shape[-1] != channels:
        raise ValueError(f"model output has {model_output.shape[-1]} channels, expected {channels}")
    return model_output, None


def p_mean_variance(
    d: Diffusion,
    model_output: jax.Array,
    x_t: jax.Array,
    t: jax.Array,
    *,
    clip_denoised: bool = False,
) -> dict[str, jax.Array]:
    """The model's p(x_{t-1} | x_t): `mean`, `variance`, `log_variance`, `pred_xstart`.

    `model_output` (N, H, W, 2C) with learned sigma (eps, then v in [-1, 1] interpolating
    log beta_t and the clipped posterior log variance), else (N, H, W, C) with the fixed
    large variance. `t` indexes the schedule `d`.
    """
    nd = x_t.ndim
    model_output = model_output.astype(jnp.float32)
    eps, var_values = split_model_output(d, model_output, x_t)
    if var_values is not None:
        min_log = at_timestep(d.posterior_log_variance_clipped, t, nd)
        max_log = at_timestep(d.log_betas, t, nd)
        frac = (var_values + 1.0) / 2.0
        log_variance = frac * max_log + (1.0 - frac) * min_log
    else:
        log_variance = jnp.broadcast_to(at_timestep(d.fixed_large_log_variance, t, nd), x_t.shape)
    pred_xstart = predict_xstart_from_eps(d, x_t, t, eps)
    if clip_denoised:
        pred_xstart = jnp.clip(pred_xstart, -1.0, 1.0)
    mean, _, _ = q_posterior_mean_variance(d, pred_xstart, x_t, t)
    return {
        "mean": mean,
        "variance": jnp.exp(log_variance),
        "log_variance": log_variance,
        "pred_xstart": pred_xstart,
    }
