"""Transformer layers of DiT: LayerNorm in float32, attention, MLP and modulation."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ditjax.models.attention import dot_product_attention
from ditjax.models.initializers import dense_kernel, zeros

LAYER_NORM_EPS = 1e-6


@jax.custom_vjp
def _matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(M, K) @ (K, N) -> (M, N), with the weight gradient as one plain (K, M) x (M, N) dot."""
    return x @ kernel


def _matmul_fwd(x: jax.Array, kernel: jax.Array):
    return x @ kernel, (x, kernel)


def _matmul_bwd(residuals, g: jax.Array):
    x, kernel = residuals
    dx = jax.lax.dot_general(g, kernel, (((1,), (1,)), ((), ())))
    dkernel = jax.lax.dot_general(x, g, (((0,), (0,)), ((), ())))
    return dx, dkernel


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nn.Module):
    """`x @ kernel + bias` over the last axis of tokens (..., K) -> (..., N).

    The leading axes are flattened into one matrix dimension and the backward pass is
    written out, so that XLA sees two plain matrix products instead of a contraction over
    several axes; on CPU that keeps it from transposing the cotangent in a slow loop.
    """

    features: int
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    dtype: jnp.dtype = jnp.float32
    zero_init: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_init = zeros if self.zero_init else dense_kernel
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(kernel_init, tuple(self.axes)),
            (x.shape[-1], self.features),
            jnp.float32,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(zeros, (self.axes[-1],)),
            (self.features,),
            jnp.float32,
        )
        lead = x.shape[:-1]
        y = _matmul(x.reshape(-1, x.shape[-1]).astype(self.dtype), kernel.astype(self.dtype))
        return y.reshape(*lead, self.features) + bias.astype(self.dtype)


def dense(
    features: int,
    axes: Sequence[str | None],
    dtype: jnp.dtype,
    *,
    zero_init: bool = False,
    name: str | None = None,
) -> Dense:
    """A Dense layer with float32 params, logical axis names and the reference's init."""
    return Dense(features, tuple(axes), dtype, zero_init, name=name)


def _normalise(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """LayerNorm without affine parameters in float32: the normalised x and 1 / std."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    inverse_std = jax.lax.rsqrt(
        jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True) + LAYER_NORM_EPS
    )
    return (x32 - mean) * inverse_std, inverse_std


class LayerNorm(nn.Module):
    """LayerNorm (eps 1e-6) with statistics in float32; affine parameters optional."""

    use_affine: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y, _ = _normalise(x)
        if self.use_affine:
            features = x.shape[-1]
            scale = self.param(
                "scale",
                nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                (features,),
                jnp.float32,
            )
            bias = self.param(
                "bias", nn.with_logical_partitioning(zeros, ("embed",)), (features,), jnp.float32
            )
            y = y * scale + bias
        return y.astype(self.dtype)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN modulation of tokens (N, T, D) by per-example (N, D) shift and scale."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def modulated_layer_norm(
    x: jax.Array, shift: jax.Array, scale: jax.Array, dtype: jnp.dtype
) -> jax.Array:
    """`modulate(LayerNorm(dtype=dtype)(x), shift, scale)`: tokens x (N, T, D), shift and
    scale (N, D) -> (N, T, D) in `dtype`.

    The same forward pass, with its backward pass written out: two reductions over tokens for
    shift and scale, and the LayerNorm gradient from two reductions over features.
    """
    return _modulated_layer_norm_fwd(x, shift, scale, dtype)[0]


def _modulated_layer_norm_fwd(x, shift, scale, dtype):
    normalised, inverse_std = _normalise(x)
    out = modulate(normalised.astype(dtype), shift, scale)
    # A zero of x's dtype, which the cotangent of x must have.
    return out, (normalised, inverse_std, scale, jnp.zeros((), x.dtype))


def _modulated_layer_norm_bwd(dtype, residuals, g):
    normalised, inverse_std, scale, x_like = residuals
    d_shift = jnp.sum(g, axis=1)
    d_scale = jnp.sum(g * normalised.astype(dtype), axis=1)
    d_normalised = (g * (1 + scale[:, None, :])).astype(jnp.float32)
    dx = inverse_std * (
        d_normalised
        - jnp.mean(d_normalised, axis=-1, keepdims=True)
        - normalised * jnp.mean(d_normalised * normalised, axis=-1, keepdims=True)
    )
    return dx.astype(x_like.dtype), d_shift, d_scale


modulated_layer_norm.defvjp(_modulated_layer_norm_fwd, _modulated_layer_norm_bwd)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection: (N, T, D) -> (N, T, D).

    The qkv output rows are [q; k; v], each head-major, as in the reference.
    """

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    implementation: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, t, d = x.shape
        head_dim = d // self.num_heads
        qkv = dense(3 * d, ("embed", "mlp"), self.dtype, name="qkv")(x)
        qkv = qkv.reshape(n, t, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = dot_product_attention(q, k, v, implementation=self.implementation)
        out = out.reshape(n, t, d)
        return dense(d, ("mlp", "embed"), self.dtype, name="proj")(out)


class CrossAttention(nn.Module):
    """Multi-head attention from tokens (N, T, D) to a context (N, S, D) -> (N, T, D)."""

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    implementation: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        n, t, d = x.shape
        s = context.shape[1]
        head_dim = d // self.num_heads
        q = dense(d, ("embed", "mlp"), self.dtype, name="q")(x)
        kv = dense(2 * d, ("embed", "mlp"), self.dtype, name="kv")(context)
        q = q.reshape(n, t, self.num_heads, head_dim)
        kv = kv.reshape(n, s, 2, self.num_heads, head_dim)
        out = dot_product_attention(q, kv[:, :, 0], kv[:, :, 1], implementation=self.implementation)
        return dense(d, ("mlp", "embed"), self.dtype, name="proj")(out.reshape(n, t, d))


class Mlp(nn.Module):
    """Dense - GELU (tanh approximation) - Dense: (N, T, D) -> (N, T, D)."""

    hidden_features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        h = dense(self.hidden_features, ("embed", "mlp"), self.dtype, name="fc1")(x.reshape(-1, d))
        h = nn.gelu(h, approximate=True)
        return dense(d, ("mlp", "embed"), self.dtype, name="fc2")(h).reshape(x.shape)


class Modulation(nn.Module):
    """SiLU - Dense(num_chunks * D) on the conditioning (N, D), split into num_chunks (N, D)."""

    num_chunks: int
    zero_init: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, c: jax.Array) -> list[jax.Array]:
        d = c.shape[-1]
        out = dense(
            self.num_chunks * d,
            ("embed", "mlp"),
            self.dtype,
            zero_init=self.zero_init,
            name="linear",
        )(nn.silu(c))
        return jnp.split(out, self.num_chunks, axis=-1)
