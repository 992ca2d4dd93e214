"""ditjax.diffusion against float64 numpy closed forms of the reference (ADM) diffusion."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_numpy as ref
from ditjax.diffusion import (
    create_diffusion,
    ddim_sample_loop,
    discretized_gaussian_log_likelihood,
    guided_model_fn,
    p_mean_variance,
    p_sample_loop,
    q_posterior_mean_variance,
    q_sample,
    space_timesteps,
    training_losses,
)

SHAPE = (4, 4, 4, 3)  # N, H, W, C


def reference_schedule(respacing: str = "", steps: int = 1000):
    base = ref.linear_betas(steps)
    kept = ref.space_timesteps(steps, respacing or [steps])
    betas, timestep_map = ref.respaced_betas(base, kept)
    return ref.schedule(betas), timestep_map


def normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_f32_close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(("respacing", "steps"), [("", 1000), ("250", 1000), ("", 500)])
def test_schedule_constants(respacing, steps):
    d = create_diffusion(respacing, diffusion_steps=steps)
    s, timestep_map = reference_schedule(respacing, steps)
    assert d.num_timesteps == len(s["betas"])
    np.testing.assert_array_equal(np.asarray(d.timestep_map), timestep_map)
    for name, expected in s.items():
        actual = np.asarray(getattr(d, name))
        assert actual.dtype == np.float32, name
        np.testing.assert_allclose(actual, expected.astype(np.float32), rtol=1e-6, err_msg=name)


def test_linear_betas():
    d = create_diffusion("")
    betas = np.asarray(d.betas, np.float64)
    assert betas[0] == pytest.approx(1e-4, rel=1e-6)
    assert betas[-1] == pytest.approx(0.02, rel=1e-6)
    np.testing.assert_allclose(betas, np.linspace(1e-4, 0.02, 1000), rtol=1e-6)
    half = np.asarray(create_diffusion("", diffusion_steps=500).betas, np.float64)
    np.testing.assert_allclose(half, np.linspace(2e-4, 0.04, 500), rtol=1e-6)
    # posterior variance is 0 at t = 0 and the clipped log variance repeats step 1.
    assert float(d.posterior_variance[0]) == 0.0
    assert float(d.posterior_log_variance_clipped[0]) == float(d.posterior_log_variance_clipped[1])


# --------------------------------------------------------------------------- respacing


def test_space_timesteps_250():
    kept = space_timesteps(1000, "250")
    assert kept == sorted(ref.space_timesteps(1000, "250"))
    assert kept == [round(i * 999 / 249) for i in range(250)]
    assert len(kept) == 250 and kept[0] == 0 and kept[-1] == 999


def test_space_timesteps_accumulates_and_rounds_half_to_even():
    # "21": stride 999 / 20 = 49.95 summed in float lands just below 499.5 at step 10, so the
    # reference keeps 499 where round(10 * 49.95) = 500.
    kept = space_timesteps(1000, "21")
    assert kept == sorted(ref.space_timesteps(1000, "21"))
    assert 499 in kept
    assert kept != sorted({round(i * 999 / 20) for i in range(21)})
    # "7": stride 166.5 is exact; Python's round sends 166.5 to 166 and 832.5 to 832.
    assert space_timesteps(1000, "7") == [0, 166, 333, 500, 666, 832, 999]


def test_space_timesteps_ddim_and_sections():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim50") == sorted(ref.space_timesteps(1000, "ddim50"))
    kept = space_timesteps(1000, "10,10,5")
    assert kept == sorted(ref.space_timesteps(1000, "10,10,5"))
    # Sections of 334, 333, 333 steps: [0, 334), [334, 667), [667, 1000).
    assert sum(k < 334 for k in kept) == 10
    assert sum(334 <= k < 667 for k in kept) == 10
    assert sum(k >= 667 for k in kept) == 5
    assert kept[0] == 0 and 333 in kept and 334 in kept and 666 in kept and 667 in kept
    assert kept[-1] == 999
    assert space_timesteps(1000, [10, 10, 5]) == kept
    assert space_timesteps(1000, "1000") == list(range(1000))


def test_respaced_schedule():
    d = create_diffusion("250")
    kept = space_timesteps(1000, "250")
    np.testing.assert_array_equal(np.asarray(d.timestep_map), kept)
    ac = np.cumprod(1.0 - ref.linear_betas(1000))
    prev = np.append(1.0, ac[kept][:-1])
    np.testing.assert_allclose(np.asarray(d.betas), 1.0 - ac[kept] / prev, rtol=1e-6)
    # The respaced cumulative product is the original one at the kept steps.
    np.testing.assert_allclose(np.asarray(d.alphas_cumprod), ac[kept], rtol=1e-6)
    full = create_diffusion("")
    assert full.num_timesteps == 1000
    np.testing.assert_array_equal(np.asarray(full.timestep_map), np.arange(1000))
    np.testing.assert_allclose(np.asarray(full.betas), ref.linear_betas(1000), rtol=1e-6)


@pytest.mark.parametrize("bad", ["abc", "ddim999", "2000", "10,500,5,abc"])
def test_bad_respacing_raises(bad):
    with pytest.raises(ValueError):
        create_diffusion(bad)


# --------------------------------------------------------------------------- closed forms


T_VALUES = np.array([0, 1, 500, 999], dtype=np.int32)


def test_q_sample():
    d = create_diffusion("")
    s, _ = reference_schedule()
    x0, noise = normal(SHAPE, 0), normal(SHAPE, 1)
    out = q_sample(d, jnp.asarray(x0), jnp.asarray(T_VALUES), jnp.asarray(noise))
    assert_f32_close(out, ref.q_sample(s, x0, T_VALUES, noise))


@pytest.mark.parametrize("respacing", ["", "250"])
def test_q_posterior_mean_variance(respacing):
    d = create_diffusion(respacing)
    s, _ = reference_schedule(respacing)
    t = np.array([0, 1, 100, d.num_timesteps - 1], dtype=np.int32)
    x0, xt = normal(SHAPE, 2), normal(SHAPE, 3)
    mean, var, log_var = q_posterior_mean_variance(d, jnp.asarray(x0), jnp.asarray(xt), t)
    r_mean, r_var, r_log_var = ref.q_posterior(s, x0, xt, t)
    assert_f32_close(mean, r_mean)
    assert_f32_close(jnp.broadcast_to(var, SHAPE), r_var, atol=1e-9)
    assert_f32_close(jnp.broadcast_to(log_var, SHAPE), r_log_var)


@pytest.mark.parametrize("respacing", ["", "250"])
def test_p_mean_variance_learned_range(respacing):
    d = create_diffusion(respacing)
    s, _ = reference_schedule(respacing)
    t = np.array([0, 1, 100, d.num_timesteps - 1], dtype=np.int32)
    xt = normal(SHAPE, 4)
    eps = normal(SHAPE, 5)
    v = np.random.default_rng(6).uniform(-1, 1, SHAPE).astype(np.float32)
    output = np.concatenate([eps, v], axis=-1)
    out = p_mean_variance(d, jnp.asarray(output), jnp.asarray(xt), jnp.asarray(t))
    expected = ref.p_mean_variance(s, output, xt, t)
    # pred_xstart at the last step scales by sqrt(1 / alpha_bar) ~ 160: float32 ulps grow.
    for key in ("mean", "pred_xstart"):
        assert_f32_close(out[key], expected[key], rtol=1e-5, atol=2e-5)
    assert_f32_close(out["log_variance"], expected["log_variance"], rtol=1e-5)
    assert_f32_close(out["variance"], expected["variance"], rtol=1e-5, atol=1e-9)
    # v = +1 gives beta_t, v = -1 the clipped posterior variance.
    ones = np.ones(SHAPE, np.float32)
    hi = p_mean_variance(d, jnp.concatenate([eps, ones], -1), xt, t)["log_variance"]
    lo = p_mean_variance(d, jnp.concatenate([eps, -ones], -1), xt, t)["log_variance"]
    assert_f32_close(hi[:, 0, 0, 0], s["log_betas"][t])
    assert_f32_close(lo[:, 0, 0, 0], s["posterior_log_variance_clipped"][t])


def test_p_mean_variance_fixed_large():
    d = create_diffusion("", learn_sigma=False)
    assert not d.learn_sigma
    s, _ = reference_schedule()
    xt, eps = normal(SHAPE, 7), normal(SHAPE, 8)
    out = p_mean_variance(d, jnp.asarray(eps), jnp.asarray(xt), jnp.asarray(T_VALUES))
    expected = ref.p_mean_variance(s, eps, xt, T_VALUES, learn_sigma=False)
    assert out["log_variance"].shape == SHAPE
    assert_f32_close(out["log_variance"], expected["log_variance"])
    pv = s["posterior_variance"]
    large = np.log(np.append(pv[1], s["betas"][1:]))
    assert_f32_close(out["log_variance"][:, 0, 0, 0], large[T_VALUES])
    assert_f32_close(out["mean"], expected["mean"], atol=2e-5)
    with pytest.raises(ValueError):
        p_mean_variance(d, jnp.zeros((*SHAPE[:-1], 6)), jnp.asarray(xt), jnp.asarray(T_VALUES))


# --------------------------------------------------------------------------- losses


def test_discretized_gaussian_log_likelihood_branches():
    # x at -1, inside and at +1; means near and far (the far ones hit the 1e-12 clamp).
    x = np.array([-1.0, -1.0, 0.2, 0.2, 1.0, 1.0, 0.0, 0.5], np.float32)
    means = np.array([-0.99, 0.9, 0.21, 0.2, 0.99, -0.9, 0.0, -0.5], np.float32)
    log_scales = np.array([-4.0, -4.0, -4.5, -1.0, -4.0, -4.0, -3.0, -5.0], np.float32)
    out = discretized_gaussian_log_likelihood(jnp.asarray(x), means, log_scales)
    expected = ref.discretized_gaussian_log_likelihood(x, means, log_scales)
    assert np.isclose(expected[1], np.log(1e-12)) and np.isclose(expected[7], np.log(1e-12))
    assert_f32_close(out, expected, rtol=1e-4, atol=1e-5)


def quantised_images(shape, seed):
    """Values on the 256-level grid of [-1, 1], both ends included."""
    levels = np.random.default_rng(seed).integers(0, 256, shape)
    levels.flat[0], levels.flat[1] = 0, 255
    return (levels / 127.5 - 1.0).astype(np.float32)


def make_model_fn(noise: np.ndarray, xp):
    """eps = noise + small perturbation (so the t = 0 decoder bin holds the mean), v in (-1, 1)."""

    def fn(x, t):
        tt = xp.asarray(t, x.dtype).reshape((-1, 1, 1, 1)) / 1000.0
        eps = xp.asarray(noise, x.dtype) + 0.1 * xp.sin(3.0 * x) + 0.05 * tt
        v = xp.tanh(0.5 * x - tt)
        return xp.concatenate([eps, v], axis=-1)

    return fn


@pytest.mark.parametrize("respacing", ["", "250"])
def test_training_losses_match_reference(respacing):
    d = create_diffusion(respacing)
    s, timestep_map = reference_schedule(respacing)
    last = d.num_timesteps - 1
    t = np.array([0, 0, 1, 5, last // 2, last], dtype=np.int32)
    shape = (6, 4, 4, 3)
    x0, noise = quantised_images(shape, 9), normal(shape, 10)
    losses = training_losses(
        d, make_model_fn(noise, jnp), jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise)
    )
    expected = ref.training_losses(s, make_model_fn(noise, np), x0, t, noise, timestep_map)
    for key in ("loss", "mse", "vb"):
        assert losses[key].shape == (6,)
        # The KL of nearly equal Gaussians (~1e-4 bits at large t) cancels in float32.
        assert_f32_close(losses[key], expected[key], rtol=2e-4, atol=5e-7)
    np.testing.assert_allclose(
        np.asarray(losses["loss"]), np.asarray(losses["mse"] + losses["vb"]), rtol=1e-6
    )
    # t = 0 takes the decoder NLL, t > 0 the KL, and those differ.
    assert np.all(np.abs(expected["nll"][:2] - expected["kl"][:2]) > 0.1)
    assert_f32_close(losses["vb"][:2], expected["nll"][:2], rtol=2e-4, atol=5e-7)
    assert_f32_close(losses["vb"][2:], expected["kl"][2:], rtol=2e-4, atol=5e-7)


def test_training_losses_fixed_variance_is_mse():
    d = create_diffusion("", learn_sigma=False)
    x0, noise = quantised_images(SHAPE, 11), normal(SHAPE, 12)

    def model_fn(x, t):
        return 0.3 * x

    losses = training_losses(d, model_fn, jnp.asarray(x0), jnp.asarray(T_VALUES), noise)
    s, _ = reference_schedule()
    xt = ref.q_sample(s, x0, T_VALUES, noise)
    mse = ref.mean_flat((noise - 0.3 * xt) ** 2)
    assert_f32_close(losses["mse"], mse, rtol=1e-5)
    assert_f32_close(losses["loss"], mse, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(losses["vb"]), 0.0)


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_min_snr_weighting(learn_sigma):
    """The loss weights the mse of step t by min(SNR_t, gamma) / SNR_t; vb and the reported
    mse stay as they are."""
    d = create_diffusion("", learn_sigma=learn_sigma)
    t = np.array([0, 10, 100, 400, 999], dtype=np.int32)
    shape = (5, 4, 4, 3)
    x0, noise = quantised_images(shape, 21), normal(shape, 22)
    model_fn = make_model_fn(noise, jnp) if learn_sigma else (lambda x, ts: 0.3 * x)
    args = (d, model_fn, jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise))
    plain = training_losses(*args)
    weighted = training_losses(*args, min_snr_gamma=5.0)
    s, _ = reference_schedule()
    alpha_bar = np.cumprod(1.0 - s["betas"])[t]
    snr = alpha_bar / (1.0 - alpha_bar)
    weight = np.minimum(snr, 5.0) / snr
    # High noise keeps weight 1; near the clean end the weight falls well below 1.
    assert weight[-1] == 1.0 and weight[0] < 0.01
    assert_f32_close(weighted["mse"], plain["mse"], rtol=1e-6)
    assert_f32_close(weighted["vb"], plain["vb"], rtol=1e-6)
    assert_f32_close(
        weighted["loss"], weight * np.asarray(plain["mse"]) + np.asarray(plain["vb"]), rtol=1e-5
    )


def test_loss_gradients_are_split():
    """vb trains only the variance channels, mse only the eps channels."""
    d = create_diffusion("")
    x0, noise = quantised_images(SHAPE, 13), normal(SHAPE, 14)
    t = jnp.asarray(T_VALUES)
    eps0 = jnp.asarray(normal(SHAPE, 15))
    v0 = jnp.asarray(np.random.default_rng(16).uniform(-0.9, 0.9, SHAPE).astype(np.float32))

    def term(name):
        def f(eps, v):
            out = training_losses(d, lambda x, ts: jnp.concatenate([eps, v], -1), x0, t, noise)
            return jnp.sum(out[name])

        return jax.grad(f, argnums=(0, 1))(eps0, v0)

    vb_eps, vb_v = term("vb")
    mse_eps, mse_v = term("mse")
    assert not np.asarray(vb_eps).any()
    assert not np.asarray(mse_v).any()
    assert np.abs(np.asarray(vb_v)).max() > 1e-4
    assert np.abs(np.asarray(mse_eps)).max() > 1e-4
    loss_eps, loss_v = term("loss")
    np.testing.assert_allclose(np.asarray(loss_eps), np.asarray(mse_eps), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(loss_v), np.asarray(vb_v), rtol=1e-6)


def test_model_fn_receives_original_timesteps():
    d = create_diffusion("250")
    t = jnp.array([0, 1, 100, 249])
    shape = (4, 2, 2, 3)

    def model_fn(x, ts):
        # eps = ts / 1000 everywhere; with zero noise, mse = (ts / 1000)^2.
        eps = jnp.broadcast_to(ts.astype(jnp.float32).reshape(-1, 1, 1, 1) / 1000.0, x.shape)
        return jnp.concatenate([eps, jnp.zeros_like(x)], -1)

    fn = jax.jit(lambda x0: training_losses(d, model_fn, x0, t, jnp.zeros(shape)))
    mse = np.asarray(fn(jnp.ones(shape))["mse"])
    seen = np.rint(np.sqrt(mse) * 1000).astype(int)
    expected = [round(i * 999 / 249) for i in (0, 1, 100, 249)]
    assert expected == [0, 4, 401, 999]
    np.testing.assert_array_equal(seen, expected)


# --------------------------------------------------------------------------- samplers


def sampler_model(xp):
    def fn(x, t):
        tt = xp.asarray(t, x.dtype).reshape((-1, 1, 1, 1)) / 1000.0
        eps = 0.5 * xp.tanh(x) * (0.5 + tt)
        v = 0.5 * xp.sin(x + tt)
        return xp.concatenate([eps, v], axis=-1)

    return fn


def test_ddim_deterministic_and_matches_reference():
    d = create_diffusion("10")
    s, timestep_map = reference_schedule("10")
    noise = normal(SHAPE, 20)
    run = jax.jit(lambda n: ddim_sample_loop(d, sampler_model(jnp), n))
    first, second = np.asarray(run(noise)), np.asarray(run(noise))
    np.testing.assert_array_equal(first, second)
    with_key = ddim_sample_loop(d, sampler_model(jnp), noise, key=jax.random.key(3))
    np.testing.assert_allclose(np.asarray(with_key), first, rtol=1e-6, atol=1e-6)
    expected = ref.ddim_loop(s, sampler_model(np), noise, timestep_map)
    assert_f32_close(first, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(first - noise).max() > 0.1


def test_ddim_with_zero_eps_is_closed_form():
    d = create_diffusion("50")
    noise = normal(SHAPE, 21)

    def model_fn(x, t):
        return jnp.concatenate([jnp.zeros_like(x), jnp.zeros_like(x)], -1)

    out = jax.jit(lambda n: ddim_sample_loop(d, model_fn, n))(noise)
    # eps = 0: each step multiplies by sqrt(alpha_bar_prev / alpha_bar); the product telescopes.
    ac_last = np.cumprod(1.0 - ref.linear_betas(1000))[-1]
    assert_f32_close(out, noise / np.sqrt(ac_last), rtol=1e-5)


def test_ddim_eta_needs_key():
    d = create_diffusion("10")
    with pytest.raises(ValueError):
        ddim_sample_loop(d, sampler_model(jnp), jnp.zeros(SHAPE), eta=1.0)
    a = ddim_sample_loop(d, sampler_model(jnp), jnp.zeros(SHAPE), eta=1.0, key=jax.random.key(0))
    b = ddim_sample_loop(d, sampler_model(jnp), jnp.zeros(SHAPE), eta=1.0, key=jax.random.key(1))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_p_sample_loop_reproducible_and_matches_reference():
    d = create_diffusion("10")
    s, timestep_map = reference_schedule("10")
    noise = normal(SHAPE, 22)
    run = jax.jit(lambda n, k: p_sample_loop(d, sampler_model(jnp), n, k))
    key = jax.random.key(7)
    a, b = np.asarray(run(noise, key)), np.asarray(run(noise, key))
    c = np.asarray(run(noise, jax.random.key(8)))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-2
    # Step i draws its noise from fold_in(key, i) (the documented contract).
    zs = [np.asarray(jax.random.normal(jax.random.fold_in(key, i), SHAPE)) for i in range(10)]
    expected = ref.ddpm_loop(s, sampler_model(np), noise, timestep_map, zs)
    assert_f32_close(a, expected, rtol=1e-4, atol=1e-4)


def test_last_p_sample_step_adds_no_noise():
    d = create_diffusion("1")  # a single step, t = 0
    assert d.num_timesteps == 1
    noise = normal(SHAPE, 23)
    a = p_sample_loop(d, sampler_model(jnp), jnp.asarray(noise), jax.random.key(0))
    b = p_sample_loop(d, sampler_model(jnp), jnp.asarray(noise), jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    t0 = jnp.zeros((SHAPE[0],), jnp.int32)
    mean = p_mean_variance(d, sampler_model(jnp)(jnp.asarray(noise), t0), noise, t0)["mean"]
    np.testing.assert_allclose(np.asarray(a), np.asarray(mean), rtol=1e-6, atol=1e-6)


def test_sampling_loops_trace_the_model_once():
    d = create_diffusion("50")
    calls = []

    def model_fn(x, t):
        calls.append(1)
        return sampler_model(jnp)(x, t)

    noise = jnp.asarray(normal(SHAPE, 24))
    jax.jit(lambda n, k: p_sample_loop(d, model_fn, n, k)).lower(noise, jax.random.key(0))
    assert 1 <= len(calls) <= 2  # a scan body, not 50 unrolled steps
    calls.clear()
    jax.jit(lambda n: ddim_sample_loop(d, model_fn, n)).lower(noise)
    assert 1 <= len(calls) <= 2


# --------------------------------------------------------------------------- guidance


def conditional_model(batches: list[int]):
    """(x, t, y) -> (N, H, W, 2C); eps and variance depend on the label."""

    def fn(x, t, y):
        batches.append(x.shape[0])
        yy = y.astype(jnp.float32).reshape(-1, 1, 1, 1)
        eps = x * (1.0 + yy / 100.0) + yy / 10.0
        v = jnp.tanh(x - yy / 1000.0)
        return jnp.concatenate([eps, v], -1)

    return fn


def test_guidance_scale_one_is_conditional():
    x = jnp.asarray(normal((3, 4, 4, 4), 30))
    t = jnp.array([5, 6, 7])
    labels = jnp.array([1, 2, 3])
    batches: list[int] = []
    model = conditional_model(batches)
    out = guided_model_fn(model, labels, 1000, 1.0, channels=4)(x, t)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(model(x, t, labels)))
    assert batches[0] == 3


@pytest.mark.parametrize("mode", ["all", "first3"])
def test_guidance_combines_eps(mode):
    x = jnp.asarray(normal((3, 4, 4, 4), 31))
    t = jnp.array([5, 6, 7])
    labels = jnp.array([1, 2, 3])
    scale = 4.0
    batches: list[int] = []
    model = conditional_model(batches)
    out = np.asarray(guided_model_fn(model, labels, 1000, scale, channels=4, mode=mode)(x, t))
    assert batches == [6]
    cond = np.asarray(model(x, t, labels))
    uncond = np.asarray(model(x, t, jnp.full((3,), 1000)))
    guided = uncond[..., :4] + scale * (cond[..., :4] - uncond[..., :4])
    assert out.shape == (3, 4, 4, 8)
    np.testing.assert_allclose(out[..., 4:], cond[..., 4:], rtol=1e-6)
    np.testing.assert_allclose(out[..., :3], guided[..., :3], rtol=1e-5, atol=1e-5)
    expected_ch3 = guided[..., 3] if mode == "all" else cond[..., 3]
    np.testing.assert_allclose(out[..., 3], expected_ch3, rtol=1e-5, atol=1e-5)
    assert np.abs(guided[..., 3] - cond[..., 3]).max() > 0.1  # the modes are distinguishable


def test_guidance_rejects_unknown_mode():
    with pytest.raises(ValueError, match="sideways"):
        guided_model_fn(
            conditional_model([]), jnp.array([1]), 1000, 2.0, channels=4, mode="sideways"
        )
