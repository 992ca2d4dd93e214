"""The training state and its creation, already sharded on the mesh."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from ditjax.models import DiT
from ditjax.parallel import logical_shardings, replicated


@struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: step, params, EMA, optimizer state, rng.

    `rng` holds raw key data (uint32) so checkpoints stay plain arrays.
    """

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array


def _init_boxed_state(
    model: DiT, optimizer: optax.GradientTransformation, seed: int, latent_shape: tuple
) -> TrainState:
    init_key, train_key = jax.random.split(jax.random.key(seed))
    x = jnp.zeros((1, *latent_shape), jnp.float32)
    t = jnp.zeros((1,), jnp.int32)
    y = jnp.zeros((1,), jnp.int32)
    params = model.init(init_key, x, t, y)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=params,
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(train_key),
    )


def abstract_train_state(
    model: DiT, optimizer: optax.GradientTransformation, seed: int, latent_shape: tuple
) -> tuple[TrainState, Any]:
    """(shapes of the unboxed state, logical-axis-annotated shapes) without allocating."""
    boxed = jax.eval_shape(lambda: _init_boxed_state(model, optimizer, seed, latent_shape))
    return nn.unbox(boxed), boxed


def state_shardings(boxed_abstract_state: Any, mesh: Mesh) -> TrainState:
    """Shardings of every state leaf from the params' logical axis names."""
    shardings = logical_shardings(boxed_abstract_state, mesh)
    fully_replicated = replicated(mesh)
    return jax.tree.map(
        lambda s: fully_replicated if s is None else s,
        shardings,
        is_leaf=lambda x: x is None,
    )


def sharded_target(abstract_state: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying their shardings: what Orbax restores into."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )


def create_train_state(
    model: DiT,
    optimizer: optax.GradientTransformation,
    seed: int,
    latent_shape: tuple[int, int, int],
    mesh: Mesh,
) -> tuple[TrainState, TrainState]:
    """(state, shardings): the initial state, created directly in its sharded layout."""
    _, boxed = abstract_train_state(model, optimizer, seed, latent_shape)
    shardings = state_shardings(boxed, mesh)
    init = jax.jit(
        lambda: nn.unbox(_init_boxed_state(model, optimizer, seed, latent_shape)),
        out_shardings=shardings,
    )
    return init(), shardings
