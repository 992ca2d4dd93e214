"""The hand-written pieces of the model against JAX's own: attention, Dense, modulated LayerNorm,
gradient boundary."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ditjax.models.attention import dot_product_attention, example_groups, explicit_attention
from ditjax.models.gradient_boundary import gradient_boundary
from ditjax.models.layers import Dense, LayerNorm, modulate, modulated_layer_norm


def _qkv(seed, t=5, s=7):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(2, t, 3, 8)).astype(np.float32)
    k = rng.normal(size=(2, s, 3, 8)).astype(np.float32)
    v = rng.normal(size=(2, s, 3, 8)).astype(np.float32)
    return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)


# 1/8 goes on q, 8^-0.5 on the logits (`attention._scale_factors`).
@pytest.mark.parametrize("scale", [8**-0.5, 0.125])
def test_explicit_attention_matches_jax_in_value_and_gradient(scale):
    q, k, v = _qkv(0)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 3, 8)).astype(np.float32))

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * w)

    ours = lambda q, k, v: explicit_attention(q, k, v, scale)  # noqa: E731
    theirs = lambda q, k, v: jax.nn.dot_product_attention(  # noqa: E731
        q, k, v, scale=scale, implementation="xla"
    )
    np.testing.assert_allclose(ours(q, k, v), theirs(q, k, v), rtol=1e-5, atol=1e-6)
    grads = jax.grad(loss(ours), argnums=(0, 1, 2))(q, k, v)
    expected = jax.grad(loss(theirs), argnums=(0, 1, 2))(q, k, v)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs nested in its equations."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _constant_scalings_of_logits(scale, t=5, s=7):
    """How many (N, H, T, S) arrays explicit attention's forward and backward passes multiply
    by a scalar."""
    q, k, v = _qkv(0, t, s)
    closed = jax.make_jaxpr(
        lambda q, k, v: jax.vjp(lambda *a: explicit_attention(*a, scale), q, k, v)[1](q)
    )(q, k, v)
    return sum(
        eqn.primitive.name == "mul"
        and eqn.outvars[0].aval.shape[-2:] == (t, s)
        and any(var.aval.shape == () for var in eqn.invars)
        for eqn in _equations(closed.jaxpr)
    )


def test_power_of_two_attention_scale_goes_on_q_not_on_the_logits():
    assert _constant_scalings_of_logits(0.125) == 0
    assert _constant_scalings_of_logits(0.5) == 0
    # Any other scale would round differently on q, so it stays on the logits.
    assert _constant_scalings_of_logits(8**-0.5) > 0


@pytest.mark.parametrize(("batch", "groups"), [(8, 4), (12, 4), (6, 2), (2, 2), (3, 1), (1, 1)])
def test_example_groups_divide_the_batch(batch, groups):
    assert example_groups(batch) == groups


def test_grouped_attention_matches_each_example_alone():
    rng = np.random.default_rng(4)
    q, k, v, w = (jnp.asarray(rng.normal(size=(8, 5, 2, 4)).astype(np.float32)) for _ in range(4))

    def loss(q, k, v, w=w):
        return jnp.sum(explicit_attention(q, k, v, 0.5) * w)

    grouped = explicit_attention(q, k, v, 0.5)
    alone = jnp.concatenate(
        [explicit_attention(q[i : i + 1], k[i : i + 1], v[i : i + 1], 0.5) for i in range(8)]
    )
    np.testing.assert_allclose(grouped, alone, rtol=1e-6, atol=1e-7)
    grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    for i in range(8):
        one = slice(i, i + 1)
        expected = jax.grad(loss, argnums=(0, 1, 2))(q[one], k[one], v[one], w[one])
        for got, want in zip(grads, expected, strict=True):
            np.testing.assert_allclose(got[one], want, rtol=1e-5, atol=1e-6)


def test_default_attention_on_cpu_is_the_explicit_form():
    q, k, v = _qkv(2)
    np.testing.assert_array_equal(
        dot_product_attention(q, k, v), explicit_attention(q, k, v, 8**-0.5)
    )


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 5), (2, 2, 3, 5)])
def test_dense_matches_flax_dense_in_value_and_gradient(shape):
    x = jnp.asarray(np.random.default_rng(3).normal(size=shape).astype(np.float32))
    ours = Dense(4)
    params = nn.unbox(ours.init(jax.random.key(0), x)["params"])
    params = jax.tree.map(lambda a: a + 0.1, params)  # a nonzero bias
    reference = nn.Dense(4)

    def loss(module, p, x):
        return jnp.sum(jnp.sin(module.apply({"params": p}, x)))

    np.testing.assert_allclose(
        ours.apply({"params": params}, x), reference.apply({"params": params}, x), rtol=1e-6
    )
    got = jax.grad(loss, argnums=(1, 2))(ours, params, x)
    want = jax.grad(loss, argnums=(1, 2))(reference, params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("dtype", "rtol"), [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)], ids=["float32", "bfloat16"]
)
def test_modulated_layer_norm_matches_autodiff_in_value_and_gradient(dtype, rtol):
    rng = np.random.default_rng(5)
    x = jnp.asarray(3.0 + 2.0 * rng.normal(size=(2, 6, 16)), dtype)
    shift, scale = (jnp.asarray(rng.normal(size=(2, 16)), dtype) for _ in range(2))
    weights = jnp.asarray(rng.normal(size=(2, 6, 16)), jnp.float32)

    def loss(fn):
        return lambda *args: jnp.sum(jnp.sin(fn(*args).astype(jnp.float32)) * weights)

    ours = lambda x, shift, scale: modulated_layer_norm(x, shift, scale, dtype)  # noqa: E731
    reference = lambda x, shift, scale: modulate(  # noqa: E731
        LayerNorm(dtype=dtype).apply({}, x), shift, scale
    )
    out = ours(x, shift, scale)
    assert out.dtype == dtype
    # The forward pass is the same computation, so it must agree to the bit.
    np.testing.assert_array_equal(
        np.asarray(out, np.float32), np.asarray(reference(x, shift, scale), np.float32)
    )
    got = jax.grad(loss(ours), argnums=(0, 1, 2))(x, shift, scale)
    want = jax.grad(loss(reference), argnums=(0, 1, 2))(x, shift, scale)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype == dtype
        scale_of = float(jnp.max(jnp.abs(b.astype(jnp.float32))))
        np.testing.assert_allclose(
            np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=rtol, atol=rtol * scale_of
        )


def test_gradient_boundary_is_the_identity_with_its_gradient():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32))
    f = lambda x: jnp.sum(jnp.tanh(gradient_boundary(x * 2.0)) ** 2)  # noqa: E731
    g = lambda x: jnp.sum(jnp.tanh(x * 2.0) ** 2)  # noqa: E731
    np.testing.assert_array_equal(gradient_boundary(x), x)
    np.testing.assert_allclose(jax.grad(f)(x), jax.grad(g)(x), rtol=1e-6)
    assert "conditional" in jax.jit(jax.grad(f)).lower(x).compile().as_text()
