"""The Diffusion Transformer: patchify, embed, transformer blocks, decode, unpatchify."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ditjax.models.blocks import BLOCK_CLASSES, FinalLayer
from ditjax.models.embeddings import (
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    sincos_2d_position_table,
)
from ditjax.models.gradient_boundary import gradient_boundary

REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")


def remat_policy_fn(name: str) -> Any:
    """The jax.checkpoint policy for a remat policy name (None means save nothing)."""
    if name == "full":
        return None
    if name == "dots_saveable":
        return jax.checkpoint_policies.dots_saveable
    if name == "dots_with_no_batch_dims_saveable":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}, got {name!r}")


def unpatchify(x: jax.Array, grid_h: int, grid_w: int, patch_size: int) -> jax.Array:
    """Tokens (N, gh * gw, p * p * C), channel index fastest -> images (N, gh * p, gw * p, C)."""
    n = x.shape[0]
    p = patch_size
    c = x.shape[-1] // (p * p)
    x = x.reshape(n, grid_h, grid_w, p, p, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, grid_h * p, grid_w * p, c)


class BlockStack(nn.Module):
    """`depth` DiT blocks, unrolled or as one `nn.scan` with optional rematerialisation."""

    block_type: str
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Any = jnp.float32
    attention_impl: str | None = None
    scan: bool = False
    remat_policy: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None) -> jax.Array:
        block_cls = BLOCK_CLASSES[self.block_type]
        if self.remat_policy != "none":
            block_cls = nn.remat(
                block_cls, policy=remat_policy_fn(self.remat_policy), prevent_cse=not self.scan
            )
        kwargs = dict(
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            dtype=self.dtype,
            attention_impl=self.attention_impl,
        )
        if not self.scan:
            for i in range(self.depth):
                x = block_cls(**kwargs, name=f"blocks_{i}")(gradient_boundary(x), cond)
            return x

        def body(block: nn.Module, carry: jax.Array, cond: jax.Array | None):
            return block(carry, cond), None

        scanned = nn.scan(
            body,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=nn.broadcast,
            length=self.depth,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x, _ = scanned(block_cls(**kwargs, name="blocks"), x, cond)
        return x


def input_hw(input_size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a latent side length or (height, width) pair."""
    if isinstance(input_size, int):
        return input_size, input_size
    height, width = input_size
    return int(height), int(width)


class DiT(nn.Module):
    """Diffusion Transformer (Peebles & Xie, 2022).

    `__call__(x, t, y)`: latents x (N, H, W, C), timesteps t (N,), labels y (N,) where
    `num_classes` means "no class". Returns (N, H, W, 2C) with learned sigma, else (N, H, W, C),
    in float32. H and W must be multiples of `patch_size` and need not be equal.
    """

    input_size: int | tuple[int, int] = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True
    block_type: str = "adaln_zero"
    dtype: Any = jnp.float32
    scan_blocks: bool = False
    remat_policy: str = "none"
    attention_impl: str | None = None

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        y: jax.Array,
        *,
        train: bool = False,
        force_drop_ids: jax.Array | None = None,
    ) -> jax.Array:
        _, height, width, channels = x.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"input {height}x{width} is not divisible by patch_size {p}")
        if channels != self.in_channels:
            raise ValueError(f"input has {channels} channels, in_channels is {self.in_channels}")
        grid_h, grid_w = height // p, width // p

        tokens = PatchEmbed(self.hidden_size, p, dtype=self.dtype, name="x_embedder")(x)
        positions = sincos_2d_position_table(self.hidden_size, grid_h, grid_w)
        tokens = tokens + jnp.asarray(positions, self.dtype)[None]

        t_emb = TimestepEmbedder(self.hidden_size, dtype=self.dtype, name="t_embedder")(t)
        force_drop = None if force_drop_ids is None else force_drop_ids.astype(bool)
        y_emb = LabelEmbedder(
            self.num_classes,
            self.hidden_size,
            self.class_dropout_prob,
            dtype=self.dtype,
            name="y_embedder",
        )(y, train, force_drop)
        c = t_emb + y_emb

        num_image_tokens = tokens.shape[1]
        if self.block_type == "in_context":
            tokens = jnp.concatenate([tokens, t_emb[:, None], y_emb[:, None]], axis=1)
            cond = None
        elif self.block_type == "cross_attention":
            cond = jnp.stack([t_emb, y_emb], axis=1)
        else:
            cond = c

        tokens = BlockStack(
            self.block_type,
            self.depth,
            self.num_heads,
            self.mlp_ratio,
            dtype=self.dtype,
            attention_impl=self.attention_impl,
            scan=self.scan_blocks,
            remat_policy=self.remat_policy,
            name="blocks",
        )(tokens, cond)
        tokens = tokens[:, :num_image_tokens]

        out = FinalLayer(
            p,
            self.out_channels,
            adaptive=self.block_type in ("adaln_zero", "adaln"),
            dtype=self.dtype,
            name="final_layer",
        )(tokens, c)
        return unpatchify(out, grid_h, grid_w, p).astype(jnp.float32)
