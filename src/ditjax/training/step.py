"""The pure training step: diffusion loss, AdamW update and EMA, in one function."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from ditjax.diffusion import Diffusion, training_losses
from ditjax.models import DiT
from ditjax.parallel import batch_sharding, replicated
from ditjax.training.state import TrainState

Batch = dict[str, jax.Array]


def sample_latents_from_moments(
    key: jax.Array, mean: jax.Array, logvar: jax.Array, scale: float
) -> jax.Array:
    """A posterior sample (mean + exp(logvar / 2) * noise) times the latent scale."""
    noise = jax.random.normal(key, mean.shape, jnp.float32)
    return (mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * noise) * scale


def ema_update(ema_params, params, decay: float):
    """ema <- decay * ema + (1 - decay) * params."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def make_train_step(
    model: DiT,
    diffusion: Diffusion,
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: float,
    latent_scale: float,
    learning_rate_fn: optax.Schedule,
    min_snr_gamma: float = 0.0,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """`train_step(state, batch) -> (state, metrics)`; `min_snr_gamma` as in `training_losses`.

    `batch` holds `mean` and `logvar` (B, h, w, C) posterior moments and `label` (B,).
    Randomness comes from fold_in(state.rng, state.step), so a resumed run repeats an
    uninterrupted one. Metrics are means over the global batch.
    """

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        key_latent, key_t, key_noise, key_drop = jax.random.split(key, 4)
        x_start = sample_latents_from_moments(
            key_latent, batch["mean"], batch["logvar"], latent_scale
        )
        labels = batch["label"].astype(jnp.int32)
        n = x_start.shape[0]
        t = jax.random.randint(key_t, (n,), 0, diffusion.num_timesteps)
        noise = jax.random.normal(key_noise, x_start.shape, jnp.float32)

        def loss_fn(params):
            def model_fn(x, timesteps):
                return model.apply(
                    {"params": params},
                    x,
                    timesteps,
                    labels,
                    train=True,
                    rngs={"dropout": key_drop},
                )

            terms = training_losses(
                diffusion, model_fn, x_start, t, noise, min_snr_gamma=min_snr_gamma
            )
            return jnp.mean(terms["loss"]), terms

        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            ema_params=ema_update(state.ema_params, params, ema_decay),
            opt_state=opt_state,
        )
        metrics = {
            "loss": loss,
            "mse": jnp.mean(terms["mse"]),
            "vb": jnp.mean(terms["vb"]),
            "grad_norm": optax.global_norm(grads),
            "learning_rate": jnp.asarray(learning_rate_fn(state.step), jnp.float32),
        }
        return new_state, metrics

    return train_step


def jit_train_step(
    step_fn: Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]],
    state_shardings: TrainState,
    mesh: Mesh,
):
    """`step_fn` jitted for `mesh`: state in its shardings (donated), the batch split over
    every device, metrics replicated."""
    return jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_sharding(mesh)),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=(0,),
    )
