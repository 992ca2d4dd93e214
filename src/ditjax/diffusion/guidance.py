"""Classifier-free guidance as a wrapper around a class-conditional model."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

GUIDANCE_MODES = ("all", "first3")

ConditionalFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def guided_model_fn(
    model_fn: ConditionalFn,
    labels: jax.Array,
    null_label: int,
    scale: float,
    *,
    channels: int,
    mode: str = "all",
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`(x, t) -> output` guided towards `labels` (N,) with classifier-free guidance.

    `model_fn(x, t, y)` returns (N, H, W, 2C) or (N, H, W, C). With scale != 1 the model runs
    once on [x; x] with labels [y; null] and eps = uncond + scale * (cond - uncond); the
    variance channels are the conditional ones. `mode="all"` guides every eps channel;
    "first3" guides only the first three, as the reference does for its published FIDs.
    Scale 1 is the plain conditional model, with no doubled batch.
    """
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance mode must be one of {GUIDANCE_MODES}, got {mode!r}")
    if scale == 1.0:
        return lambda x, t: model_fn(x, t, labels)
    guided = channels if mode == "all" else min(3, channels)

    def fn(x: jax.Array, t: jax.Array) -> jax.Array:
        n = x.shape[0]
        null = jnp.full_like(labels, null_label)
        out = model_fn(
            jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([labels, null])
        )
        cond, uncond = out[:n], out[n:]
        eps = uncond[..., :guided] + scale * (cond[..., :guided] - uncond[..., :guided])
        return jnp.concatenate([eps, cond[..., guided:]], axis=-1)

    return fn
