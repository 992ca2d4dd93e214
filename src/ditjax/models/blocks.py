"""The four DiT block designs of the paper and the final layer.

Every block maps tokens x (N, T, D) and conditioning c (N, D), or for the cross-attention
block the conditioning tokens (N, 2, D), to new tokens (N, T, D).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ditjax.models.layers import (
    CrossAttention,
    LayerNorm,
    Mlp,
    Modulation,
    SelfAttention,
    dense,
    modulated_layer_norm,
)

BLOCK_TYPES = ("adaln_zero", "adaln", "cross_attention", "in_context")


class BlockBase(nn.Module):
    """Fields shared by every block design."""

    num_heads: int
    mlp_ratio: float = 4.0
    dtype: jnp.dtype = jnp.float32
    attention_impl: str | None = None

    def attention(self) -> SelfAttention:
        return SelfAttention(
            self.num_heads, dtype=self.dtype, implementation=self.attention_impl, name="attn"
        )

    def mlp(self, d: int) -> Mlp:
        return Mlp(int(d * self.mlp_ratio), dtype=self.dtype, name="mlp")


class AdaLNZeroBlock(BlockBase):
    """adaLN-Zero: shift, scale and a zero-initialised gate per sub-layer, from c."""

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = Modulation(
            6, zero_init=True, dtype=self.dtype, name="adaLN_modulation"
        )(c)
        attn_in = modulated_layer_norm(x, shift_msa, scale_msa, self.dtype)
        x = x + gate_msa[:, None] * self.attention()(attn_in)
        mlp_in = modulated_layer_norm(x, shift_mlp, scale_mlp, self.dtype)
        x = x + gate_mlp[:, None] * self.mlp(x.shape[-1])(mlp_in)
        return x


class AdaLNBlock(BlockBase):
    """adaLN: shift and scale per sub-layer from c, no gates, regular initialisation."""

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift_msa, scale_msa, shift_mlp, scale_mlp = Modulation(
            4, zero_init=False, dtype=self.dtype, name="adaLN_modulation"
        )(c)
        x = x + self.attention()(modulated_layer_norm(x, shift_msa, scale_msa, self.dtype))
        x = x + self.mlp(x.shape[-1])(modulated_layer_norm(x, shift_mlp, scale_mlp, self.dtype))
        return x


class CrossAttentionBlock(BlockBase):
    """Pre-norm ViT block with cross-attention to the conditioning tokens [t, y] (N, 2, D)."""

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        x = x + self.attention()(LayerNorm(True, self.dtype, name="norm1")(x))
        x = x + CrossAttention(
            self.num_heads,
            dtype=self.dtype,
            implementation=self.attention_impl,
            name="cross_attn",
        )(LayerNorm(True, self.dtype, name="norm_cross")(x), context)
        x = x + self.mlp(x.shape[-1])(LayerNorm(True, self.dtype, name="norm2")(x))
        return x


class InContextBlock(BlockBase):
    """Pre-norm ViT block; the conditioning travels as extra tokens in x, so c is unused."""

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array | None = None) -> jax.Array:
        del c
        x = x + self.attention()(LayerNorm(True, self.dtype, name="norm1")(x))
        x = x + self.mlp(x.shape[-1])(LayerNorm(True, self.dtype, name="norm2")(x))
        return x


BLOCK_CLASSES: dict[str, type[BlockBase]] = {
    "adaln_zero": AdaLNZeroBlock,
    "adaln": AdaLNBlock,
    "cross_attention": CrossAttentionBlock,
    "in_context": InContextBlock,
}


class FinalLayer(nn.Module):
    """Norm, optional adaLN from c, and a zero-initialised Dense: (N, T, D) -> (N, T, p*p*C)."""

    patch_size: int
    out_channels: int
    adaptive: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        if self.adaptive:
            shift, scale = Modulation(2, zero_init=True, dtype=self.dtype, name="adaLN_modulation")(
                c
            )
            x = modulated_layer_norm(x, shift, scale, self.dtype)
        else:
            x = LayerNorm(True, self.dtype, name="norm_final")(x)
        features = self.patch_size * self.patch_size * self.out_channels
        return dense(features, ("embed", None), self.dtype, zero_init=True, name="linear")(x)
