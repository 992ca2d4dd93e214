"""Scaled dot-product attention for DiT: JAX's kernels where they are fast, an explicit
softmax(q k^T) v with a written-out backward pass on CPU."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

# XLA's CPU runtime runs each batched matrix product on a single thread, but inside a
# program as large as a train step it runs independent products at the same time: attention
# over this many groups of examples, each its own products, keeps the cores busy there
# (measured best on 2 cores; 2 and 8 are slower; neutral for a guided forward pass).
CPU_EXAMPLE_GROUPS = 4


def example_groups(batch: int) -> int:
    """How many equal groups of examples the CPU attention of a batch is split into."""
    return math.gcd(batch, CPU_EXAMPLE_GROUPS)


def _heads_first(x: jax.Array) -> jax.Array:
    """(N, T, H, d) <-> (N, H, T, d)."""
    return jnp.swapaxes(x, 1, 2)


def _keys_first(x: jax.Array) -> jax.Array:
    """(N, H, d, S) -> (N, S, H, d)."""
    return jnp.transpose(x, (0, 3, 1, 2))


def _scale_factors(scale: float) -> tuple[float, float]:
    """(q factor, logits factor) whose product is `scale`.

    A power-of-two scale (head dim 64: 1/8) goes on q, an (N, H, T, d) multiply that is exact
    in any float dtype, so the logits come out the same to the bit and need no (N, H, T, S)
    scaling, which XLA's CPU backend reads from a materialised array of the constant. Any
    other scale stays on the float32 logits, where rounding it into q would change them.
    """
    if math.frexp(scale)[0] == 0.5:
        return scale, 1.0
    return 1.0, scale


def _scaled(x: jax.Array, factor: float) -> jax.Array:
    return x if factor == 1.0 else x * jnp.asarray(factor, x.dtype)


def _forward(qh: jax.Array, kh: jax.Array, vh: jax.Array, scale: float):
    """Head-first attention q (N, H, T, d), k and v (N, H, S, d) -> (N, H, T, d), and what
    the backward pass needs.

    The softmax is normalised after the product with v: one (N, H, T, d) scaling instead of
    an (N, H, T, S) one, and XLA's CPU backend runs the whole thing as one fused kernel.
    """
    q_factor, logits_factor = _scale_factors(scale)
    qs = _scaled(qh, q_factor)
    logits = jnp.einsum("nhtd,nhsd->nhts", qs, kh, preferred_element_type=jnp.float32)
    logits = _scaled(logits, logits_factor)
    weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    inverse_sums = 1.0 / jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum("nhts,nhsd->nhtd", weights.astype(vh.dtype), vh) * inverse_sums
    return out.astype(vh.dtype), (qs, kh, vh, weights, inverse_sums)


def _backward(scale: float, residuals, gh: jax.Array):
    """Cotangents of head-first attention from the output's gh (N, H, T, d): dq (N, H, T, d)
    and dk, dv as (N, H, d, S).

    dk and dv contract over the query axis and come out as (N, H, d, S), whose transpose back
    to token-major order is needed anyway. Their query-major operand is read transposed, so
    XLA's CPU backend runs these two products with Eigen, and dq and dp with YNNPACK.
    """
    q_factor, logits_factor = _scale_factors(scale)
    qs, kh, vh, weights, inverse_sums = residuals
    p = weights * inverse_sums
    dv = jnp.einsum("nhtd,nhts->nhds", gh, p.astype(gh.dtype))
    dp = jnp.einsum("nhtd,nhsd->nhts", gh, vh, preferred_element_type=jnp.float32)
    dlogits = _scaled(p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True)), logits_factor)
    dlogits = dlogits.astype(qs.dtype)
    dq = _scaled(jnp.einsum("nhts,nhsd->nhtd", dlogits, kh), q_factor)
    dk = jnp.einsum("nhtd,nhts->nhds", qs, dlogits)
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def explicit_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
    """softmax(scale * q k^T) v: q (N, T, H, d), k and v (N, S, H, d) -> (N, T, H, d).

    The backward pass reuses the saved weights and runs as four batched matrix products,
    which XLA's CPU backend executes far faster than the derivative it derives itself. Both
    passes run on `example_groups(N)` independent groups of examples.
    """
    return _explicit_fwd(q, k, v, scale)[0]


def _explicit_fwd(q, k, v, scale):
    groups = example_groups(q.shape[0])
    pieces = zip(*(jnp.split(_heads_first(x), groups) for x in (q, k, v)), strict=True)
    outs, residuals = zip(*(_forward(*piece, scale) for piece in pieces), strict=True)
    return _heads_first(jnp.concatenate(outs)), residuals


def _explicit_bwd(scale, residuals, g):
    pieces = jnp.split(_heads_first(g), len(residuals))
    grads = [_backward(scale, r, gh) for r, gh in zip(residuals, pieces, strict=True)]
    dq, dk, dv = (jnp.concatenate(parts) for parts in zip(*grads, strict=True))
    return _heads_first(dq), _keys_first(dk), _keys_first(dv)


explicit_attention.defvjp(_explicit_fwd, _explicit_bwd)


# The names `dot_product_attention` takes as `implementation`; "" stands for None (the default).
ATTENTION_IMPLS = ("", "xla", "cudnn")


def check_attention_impl(name: str) -> None:
    """Raises ValueError if `name` is not one of ATTENTION_IMPLS, or names cuDNN in a process
    whose backend is not a GPU (which initialises the backend)."""
    if name not in ATTENTION_IMPLS:
        raise ValueError(f"must be one of {ATTENTION_IMPLS}, got {name!r}")
    if name == "cudnn" and jax.default_backend() != "gpu":
        raise ValueError(f"cudnn needs a GPU; this process's backend is {jax.default_backend()}")


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
