"""Input embeddings of DiT: patches, fixed 2-D sin-cos positions, timesteps and labels."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ditjax.models.initializers import patch_kernel

TIMESTEP_FREQUENCY_SIZE = 256


def sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """Sin-cos table for 1-D positions: (M,) -> (M, embed_dim), laid out as [sin, cos]."""
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d_position_table(embed_dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Fixed 2-D position table (grid_h * grid_w, embed_dim), tokens row-major over (h, w).

    The first half of the channels encodes the column (w) index, the second half the row.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4, got {embed_dim}")
    cols, rows = np.meshgrid(np.arange(grid_w), np.arange(grid_h))
    table = np.concatenate(
        [sincos_1d(embed_dim // 2, cols), sincos_1d(embed_dim // 2, rows)], axis=1
    )
    return table.astype(np.float32)


def timestep_frequencies(
    t: jax.Array, dim: int = TIMESTEP_FREQUENCY_SIZE, max_period: float = 10000.0
) -> jax.Array:
    """Sinusoidal timestep features (N,) -> (N, dim), laid out as [cos, sin]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        embedding = jnp.concatenate([embedding, jnp.zeros_like(embedding[:, :1])], axis=-1)
    return embedding


class PatchEmbed(nn.Module):
    """p x p convolution with stride p: (N, H, W, C) -> (N, H/p * W/p, D) tokens, row-major."""

    hidden_size: int
    patch_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.patch_size
        x = nn.Conv(
            self.hidden_size,
            (p, p),
            strides=(p, p),
            padding="VALID",
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(patch_kernel, (None, None, None, "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="proj",
        )(x.astype(self.dtype))
        n, gh, gw, d = x.shape
        return x.reshape(n, gh * gw, d)


class TimestepEmbedder(nn.Module):
    """Timesteps (N,) -> (N, D): sinusoidal features, then Dense - SiLU - Dense."""

    hidden_size: int
    frequency_size: int = TIMESTEP_FREQUENCY_SIZE
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        normal = nn.initializers.normal(0.02)
        h = timestep_frequencies(t, self.frequency_size).astype(self.dtype)
        h = nn.Dense(
            self.hidden_size,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(normal, (None, "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="mlp_0",
        )(h)
        h = nn.silu(h)
        return nn.Dense(
            self.hidden_size,
            dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(normal, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="mlp_2",
        )(h)


def drop_labels(labels: jax.Array, num_classes: int, drop: jax.Array) -> jax.Array:
    """Replaces labels with the null class `num_classes` where `drop` is true."""
    return jnp.where(drop, num_classes, labels)


class LabelEmbedder(nn.Module):
    """Labels (N,) -> (N, D); row `num_classes` of the table is the "no class" embedding.

    With `train=True` each label becomes the null class with probability `dropout_prob`,
    drawing from the 'dropout' rng stream; `force_drop` (N,) bool forces the drop.
    """

    num_classes: int
    hidden_size: int
    dropout_prob: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, labels: jax.Array, train: bool, force_drop: jax.Array | None = None
    ) -> jax.Array:
        if force_drop is not None:
            labels = drop_labels(labels, self.num_classes, force_drop)
        elif train and self.dropout_prob > 0:
            rng = self.make_rng("dropout")
            drop = jax.random.uniform(rng, labels.shape) < self.dropout_prob
            labels = drop_labels(labels, self.num_classes, drop)
        table = self.param(
            "embedding_table",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
            (self.num_classes + 1, self.hidden_size),
            jnp.float32,
        )
        return jnp.take(table, labels, axis=0).astype(self.dtype)


__all__ = [
    "LabelEmbedder",
    "PatchEmbed",
    "TimestepEmbedder",
    "sincos_2d_position_table",
    "timestep_frequencies",
]
