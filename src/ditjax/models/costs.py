"""Parameter counts and forward cost of DiT variants, computed without allocating weights."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ditjax.models.dit import DiT, input_hw
from ditjax.models.embeddings import TIMESTEP_FREQUENCY_SIZE


def abstract_params(model: DiT, input_size: int | tuple[int, int] | None = None):
    """Parameter shapes of `model` (a pytree of ShapeDtypeStruct) via `jax.eval_shape`."""
    height, width = input_hw(model.input_size if input_size is None else input_size)
    x = jax.ShapeDtypeStruct((1, height, width, model.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    y = jax.ShapeDtypeStruct((1,), jnp.int32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x, t, y)
    return variables["params"]


def count_parameters(params) -> int:
    """Number of values in a params pytree (arrays or ShapeDtypeStructs)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def position_table_size(model: DiT, input_size: int | tuple[int, int] | None = None) -> int:
    """Values in the fixed position table, which the reference counts among its parameters."""
    height, width = input_hw(model.input_size if input_size is None else input_size)
    return (height // model.patch_size) * (width // model.patch_size) * model.hidden_size


def forward_macs(model: DiT, input_size: int | tuple[int, int] | None = None) -> int:
    """Multiply-adds of one forward pass for one image (the paper's "Gflops" unit).

    Counts the matrix products (patch embedding, conditioning MLPs, attention, MLPs,
    modulation and the final layer); element-wise work is ignored, as in the paper.
    """
    height, width = input_hw(model.input_size if input_size is None else input_size)
    p, d = model.patch_size, model.hidden_size
    tokens = (height // p) * (width // p)
    hidden = int(d * model.mlp_ratio)
    embed = tokens * p * p * model.in_channels * d
    embed += TIMESTEP_FREQUENCY_SIZE * d + d * d
    seq = tokens + 2 if model.block_type == "in_context" else tokens
    block = seq * (3 * d * d + d * d + 2 * d * hidden) + 2 * seq * seq * d
    if model.block_type == "adaln_zero":
        block += 6 * d * d
    elif model.block_type == "adaln":
        block += 4 * d * d
    elif model.block_type == "cross_attention":
        block += seq * 2 * d * d + 2 * 2 * d * d + 2 * seq * 2 * d
    final = tokens * d * p * p * model.out_channels
    if model.block_type in ("adaln_zero", "adaln"):
        final += 2 * d * d
    return embed + model.depth * block + final
