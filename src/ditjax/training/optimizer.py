"""AdamW with optional warmup and gradient clipping, from the config."""

from __future__ import annotations

from typing import TYPE_CHECKING

import optax

if TYPE_CHECKING:
    import ml_collections

LR_DECAYS = ("none", "cosine")


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """An optional linear warmup from zero to `learning_rate`, then either constant (`lr_decay`
    "none") or a cosine decay that reaches `lr_final_fraction * learning_rate` at `total_steps`."""
    peak = config.learning_rate
    warmup = config.warmup_steps
    # Configs saved before the decay fields existed trained at a constant rate.
    if config.get("lr_decay", "none") == "cosine":
        after_warmup = optax.cosine_decay_schedule(
            peak, max(config.total_steps - warmup, 1), alpha=config.lr_final_fraction
        )
    else:
        after_warmup = optax.constant_schedule(peak)
    if warmup == 0:
        return after_warmup
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), after_warmup], boundaries=[warmup]
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """optax AdamW as configured (the reference uses lr 1e-4, no weight decay)."""
    return clipped_adamw(
        learning_rate_schedule(config),
        b1=config.adam_b1,
        b2=config.adam_b2,
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
        grad_clip_norm=config.grad_clip_norm,
    )


def clipped_adamw(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    grad_clip_norm: float,
) -> optax.GradientTransformation:
    """optax AdamW, after clipping the gradients' global norm to `grad_clip_norm` when it is
    positive."""
    adamw = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    if grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(grad_clip_norm), adamw)
    return adamw
