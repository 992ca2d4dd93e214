"""DPM-Solver++(2M) on Gaussian data, whose noise prediction and ODE solution are closed forms."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ditjax.diffusion import (
    create_diffusion,
    ddim_sample_loop,
    dpm_solver_timesteps,
    dpmpp_2m_sample_loop,
    guided_model_fn,
    linear_betas,
)

MEAN, STD = 0.3, 2.0  # the data: N(MEAN, STD^2) in every dimension
SHAPE = (2, 4, 4, 3)


def alphas_cumprod_f64() -> np.ndarray:
    return np.cumprod(1.0 - linear_betas(1000))


def gaussian_eps(learn_sigma: bool = False):
    """E[eps | x_t] for N(MEAN, STD^2) data: sigma (x - alpha MEAN) / (alpha^2 STD^2 + sigma^2)."""
    table = jnp.asarray(alphas_cumprod_f64(), jnp.float32)

    def model_fn(x, t):
        ac = table[t].reshape(-1, 1, 1, 1)
        alpha, sigma = jnp.sqrt(ac), jnp.sqrt(1.0 - ac)
        eps = sigma * (x - alpha * MEAN) / (alpha**2 * STD**2 + sigma**2)
        if learn_sigma:  # a variance half that must be ignored
            return jnp.concatenate([eps, jnp.full_like(eps, 7.0)], axis=-1)
        return eps

    return model_fn


def exact_solution(noise: np.ndarray) -> np.ndarray:
    """The probability-flow ODE from t = 999 to t = 0 keeps (x - alpha m) / sqrt(alpha^2 s^2 +
    sigma^2); then the x_0 prediction at t = 0, as the samplers' last step makes it."""
    ac = alphas_cumprod_f64()
    a_T, s_T, a_0, s_0 = np.sqrt(ac[-1]), np.sqrt(1 - ac[-1]), np.sqrt(ac[0]), np.sqrt(1 - ac[0])
    z = (noise - a_T * MEAN) / np.sqrt(a_T**2 * STD**2 + s_T**2)
    x_0 = a_0 * MEAN + np.sqrt(a_0**2 * STD**2 + s_0**2) * z
    return MEAN + a_0 * STD**2 / (a_0**2 * STD**2 + s_0**2) * (x_0 - a_0 * MEAN)


def noise() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)


def dpmpp(steps: int, learn_sigma: bool = False) -> np.ndarray:
    d = create_diffusion("", learn_sigma=learn_sigma)
    fn = jax.jit(lambda x: dpmpp_2m_sample_loop(d, gaussian_eps(learn_sigma), x, steps=steps))
    return np.asarray(fn(jnp.asarray(noise())), np.float64)


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_timesteps_are_uniform_in_t_from_last_to_zero():
    np.testing.assert_array_equal(dpm_solver_timesteps(1000, 4), [999, 666, 333, 0])
    np.testing.assert_array_equal(dpm_solver_timesteps(1000, 1), [999])
    assert len(set(dpm_solver_timesteps(1000, 1000).tolist())) == 1000
    with pytest.raises(ValueError, match="steps must be in"):
        dpm_solver_timesteps(1000, 0)


def test_error_shrinks_at_second_order():
    reference = exact_solution(noise().astype(np.float64))
    errors = [rms(dpmpp(n), reference) for n in (10, 20, 40, 80)]
    ratios = [a / b for a, b in itertools.pairwise(errors)]
    # Halving the step divides a second-order error by about 4 (first order: 2).
    assert all(3.0 < r < 6.0 for r in ratios), (errors, ratios)
    assert errors[-1] < 1e-2


def test_closer_to_a_1000_step_ddim_than_ddim_at_20_steps():
    x = jnp.asarray(noise())

    def ddim(steps):
        d = create_diffusion(f"ddim{steps}", learn_sigma=False)
        return np.asarray(jax.jit(lambda n: ddim_sample_loop(d, gaussian_eps(), n))(x))

    reference = ddim(1000)
    assert rms(reference, exact_solution(noise().astype(np.float64))) < 5e-3
    dpm_error, ddim_error = rms(dpmpp(20), reference), rms(ddim(20), reference)
    assert dpm_error < 0.7 * ddim_error, (dpm_error, ddim_error)


def test_learned_sigma_uses_the_eps_half_only():
    np.testing.assert_allclose(dpmpp(10, learn_sigma=True), dpmpp(10), rtol=0, atol=1e-6)


def test_guided_model_fn_passes_through():
    """Guidance at scale s of eps_c and eps_u is eps_u + s (eps_c - eps_u); the loop sees it."""
    d = create_diffusion("", learn_sigma=False)
    base = gaussian_eps()

    def conditional(x, t, y):
        shift = (y == 0).astype(jnp.float32).reshape(-1, 1, 1, 1)
        return base(x, t) + 0.01 * shift

    labels = jnp.array([0, 1])
    guided = guided_model_fn(conditional, labels, 2, 3.0, channels=3)

    def expected_fn(x, t):
        return base(x, t) + 0.03 * (labels == 0).reshape(-1, 1, 1, 1)

    x = jnp.asarray(noise())
    out = jax.jit(lambda n: dpmpp_2m_sample_loop(d, guided, n, steps=8))(x)
    expected = jax.jit(lambda n: dpmpp_2m_sample_loop(d, expected_fn, n, steps=8))(x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=1e-5, atol=1e-5)
