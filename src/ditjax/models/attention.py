"""Scaled dot-product attention for DiT: JAX's kernels where they are fast, an explicit
softmax(q k^T) v with a written-out backward pass on CPU."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _heads_first(x: jax.Array) -> jax.Array:
    """(N, T, H, d) <-> (N, H, T, d)."""
    return jnp.swapaxes(x, 1, 2)


def _probabilities(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
    """Softmax attention weights (N, H, T, S) in float32 from head-first q (N, H, T, d), k."""
    logits = jnp.einsum("nhtd,nhsd->nhts", q, k, preferred_element_type=jnp.float32) * scale
    logits = logits - jnp.max(logits, axis=-1, keepdims=True)
    weights = jnp.exp(logits)
    return weights * (1.0 / jnp.sum(weights, axis=-1, keepdims=True))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def explicit_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
    """softmax(scale * q k^T) v: q (N, T, H, d), k and v (N, S, H, d) -> (N, T, H, d).

    The backward pass reuses the saved weights and runs as four batched matrix products,
    which XLA's CPU backend executes far faster than the derivative it derives itself.
    """
    return _attention_fwd(q, k, v, scale)[0]


def _attention_fwd(q, k, v, scale):
    qh, kh, vh = _heads_first(q), _heads_first(k), _heads_first(v)
    p = _probabilities(qh, kh, scale)
    out = jnp.einsum("nhts,nhsd->nhtd", p.astype(v.dtype), vh)
    return _heads_first(out), (qh, kh, vh, p)


def _attention_bwd(scale, residuals, g):
    qh, kh, vh, p = residuals
    gh = _heads_first(g)
    dv = jnp.einsum("nhts,nhtd->nhsd", p.astype(g.dtype), gh)
    dp = jnp.einsum("nhtd,nhsd->nhts", gh, vh, preferred_element_type=jnp.float32)
    dlogits = p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True)) * scale
    dlogits = dlogits.astype(qh.dtype)
    dq = jnp.einsum("nhts,nhsd->nhtd", dlogits, kh)
    dk = jnp.einsum("nhts,nhtd->nhsd", dlogits, qh)
    return _heads_first(dq), _heads_first(dk), _heads_first(dv)


explicit_attention.defvjp(_attention_fwd, _attention_bwd)


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str | None = None
) -> jax.Array:
    """Multi-head attention, q (N, T, H, d), k and v (N, S, H, d) -> (N, T, H, d).

    `implementation` None picks the explicit form on CPU and `jax.nn.dot_product_attention`
    (cuDNN flash attention where available) elsewhere; "xla" and "cudnn" go to JAX directly.
    """
    scale = q.shape[-1] ** -0.5
    if implementation is None and jax.default_backend() == "cpu":
        return explicit_attention(q, k, v, scale)
    return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation=implementation)
