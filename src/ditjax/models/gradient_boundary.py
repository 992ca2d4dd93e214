"""A point in the network where the gradient is computed once and stored.

In an unrolled residual stack the gradient of the residual stream is a running sum of every
later block's contribution. XLA's CPU backend fuses that elementwise sum into each of its
consumers and so recomputes it in every fusion of every earlier block, a cost that grows with
the square of the depth. Passing the stream through `gradient_boundary` between blocks makes
its gradient an explicit value: the identity in the forward pass, and in the backward pass
a conditional (which XLA cannot fuse across) that returns the cotangent unchanged.
"""

from __future__ import annotations

import jax


@jax.custom_vjp
def _stored_gradient(x: jax.Array) -> jax.Array:
    return x


def _forward(x: jax.Array):
    return x, None


def _backward(_, g: jax.Array):
    first = g.reshape(-1)[0]
    # Both branches return g (x * 1 == x for every float); the predicate only has to be
    # unknown at compile time.
    return (jax.lax.cond(first == first, lambda a: a, lambda a: a * 1.0, g),)


_stored_gradient.defvjp(_forward, _backward)


def gradient_boundary(x: jax.Array) -> jax.Array:
    """Identity on x; on CPU its gradient is materialised rather than fused downstream.

    Other backends get x unchanged: their fusion heuristics bound fusion size themselves, and
    a conditional would cost a device-to-host predicate read on GPUs.
    """
    if jax.default_backend() != "cpu":
        return x
    return _stored_gradient(x)
