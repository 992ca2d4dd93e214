"""DPM-Solver++(2M) (Lu et al. 2022): multistep second-order data-prediction ODE solver."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ditjax.diffusion.gaussian import predict_xstart_from_eps, split_model_output
from ditjax.diffusion.schedule import Diffusion

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def dpm_solver_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """`steps` schedule indices from T - 1 down to 0, uniform in t ("linspace"/time-uniform
    spacing, rounded to integers); for steps = 1 just [T - 1]."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps}], got {steps}")
    if steps == 1:
        return np.array([num_timesteps - 1])
    return np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(np.int32)


def dpmpp_2m_sample_loop(d: Diffusion, model_fn: ModelFn, noise: jax.Array, *, steps: int):
    """Solves the probability-flow ODE from x_T = `noise` (N, H, W, C) with `steps` model calls.

    The ODE runs over `dpm_solver_timesteps(d.num_timesteps, steps)` with lambda_t =
    log(alpha_t) - log(sigma_t) from d.alphas_cumprod; the first step is first order, the rest
    second order (Lu et al. 2022b, Alg. 2). The last call, at t = 0, returns its x_0 prediction
    (as DDIM's last step does). `model_fn(x, timesteps)` sees d.timestep_map[t]; with learned
    sigma only the eps half of its output is used. One `lax.scan`; deterministic.
    """
    ts = jnp.asarray(dpm_solver_timesteps(d.num_timesteps, steps))
    alphas_cumprod = d.alphas_cumprod[ts]
    alpha = jnp.sqrt(alphas_cumprod)
    sigma = jnp.sqrt(1.0 - alphas_cumprod)
    lam = jnp.log(alpha) - jnp.log(sigma)

    def predict_x0(x: jax.Array, i: jax.Array) -> jax.Array:
        t = jnp.full((x.shape[0],), ts[i], dtype=jnp.int32)
        output = model_fn(x, jnp.take(d.timestep_map, t)).astype(jnp.float32)
        eps, _ = split_model_output(d, output, x)
        return predict_xstart_from_eps(d, x, t, eps)

    def step(carry, i):
        x, x0_prev = carry
        x0 = predict_x0(x, i)
        h = lam[i + 1] - lam[i]
        r = jnp.where(i == 0, 1.0, (lam[i] - lam[jnp.maximum(i - 1, 0)]) / h)
        second = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        data = jnp.where(i == 0, x0, second)
        x_next = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * jnp.expm1(-h) * data
        return (x_next, x0), None

    x = noise.astype(jnp.float32)
    (x, _), _ = jax.lax.scan(step, (x, jnp.zeros_like(x)), jnp.arange(steps - 1))
    return predict_x0(x, jnp.asarray(steps - 1))
