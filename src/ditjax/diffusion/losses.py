"""The hybrid training loss: MSE on the noise plus the variational bound (in bits)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ditjax.diffusion.gaussian import (
    p_mean_variance,
    q_posterior_mean_variance,
    q_sample,
    split_model_output,
)
from ditjax.diffusion.schedule import Diffusion

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def mean_over_dims(x: jax.Array) -> jax.Array:
    """Mean over every axis but the first: (N, ...) -> (N,)."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> jax.Array:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), element-wise, in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + jnp.exp(logvar1 - logvar2)
        + jnp.square(mean1 - mean2) * jnp.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: jax.Array) -> jax.Array:
    """The tanh approximation of the standard normal CDF."""
    return 0.5 * (1.0 + jnp.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: jax.Array, means: jax.Array, log_scales: jax.Array
) -> jax.Array:
    """Log-likelihood of data in [-1, 1] quantised to 256 bins under a Gaussian, element-wise."""
    centered = x - means
    inv_stdv = jnp.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
    log_cdf_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
    return jnp.where(
        x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta)
    )


def vb_terms_bpd(
    d: Diffusion, model_output: jax.Array, x_start: jax.Array, x_t: jax.Array, t: jax.Array
) -> jax.Array:
    """Per-example variational bound term in bits: the posterior KL, or at t = 0 the decoder NLL."""
    true_mean, _, true_log_variance = q_posterior_mean_variance(d, x_start, x_t, t)
    out = p_mean_variance(d, model_output, x_t, t)
    kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
    kl = mean_over_dims(kl) / np.log(2.0)
    nll = -discretized_gaussian_log_likelihood(
        x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
    )
    nll = mean_over_dims(nll) / np.log(2.0)
    return jnp.where(t == 0, nll, kl)


def training_losses(
    d: Diffusion,
    model_fn: ModelFn,
    x_start: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    *,
    min_snr_gamma: float = 0.0,
) -> dict[str, jax.Array]:
    """Per-example `loss` = weighted `mse` (+ `vb` with learned sigma), each (N,).

    `t` (N,) indexes the schedule `d`; `model_fn(x_t, timesteps)` receives the original
    timesteps. The vb term sees the predicted mean through a stop_gradient, so it trains
    only the variance. `min_snr_gamma` > 0 weights the mse of step t by min(SNR_t, gamma) /
    SNR_t (Min-SNR weighting, Hang et al. 2023); 0 keeps the paper's uniform weight. The
    reported `mse` is always unweighted.
    """
    x_start = x_start.astype(jnp.float32)
    noise = noise.astype(jnp.float32)
    x_t = q_sample(d, x_start, t, noise)
    model_output = model_fn(x_t, jnp.take(d.timestep_map, t)).astype(jnp.float32)
    eps, var_values = split_model_output(d, model_output, x_t)
    mse = mean_over_dims(jnp.square(noise - eps))
    weighted_mse = mse * min_snr_weight(d, t, min_snr_gamma) if min_snr_gamma > 0 else mse
    if var_values is None:
        return {"loss": weighted_mse, "mse": mse, "vb": jnp.zeros_like(mse)}
    frozen = jnp.concatenate([jax.lax.stop_gradient(eps), var_values], axis=-1)
    vb = vb_terms_bpd(d, frozen, x_start, x_t, t)
    return {"loss": weighted_mse + vb, "mse": mse, "vb": vb}


def min_snr_weight(d: Diffusion, t: jax.Array, gamma: float) -> jax.Array:
    """min(SNR_t, gamma) / SNR_t (N,) for steps `t` (N,), SNR_t = abar_t / (1 - abar_t):
    1 at high noise, falling towards the clean end."""
    alpha_bar = jnp.take(d.alphas_cumprod, t)
    snr = alpha_bar / (1.0 - alpha_bar)
    return jnp.minimum(snr, gamma) / snr
