"""The Stable Diffusion KL autoencoder (diffusers `AutoencoderKL`) in Flax Linen, NHWC.

Module and parameter names follow the diffusers module tree (`encoder/down_blocks_0/resnets_1/
conv1`, ...) so that `ditjax.convert.diffusers_vae` can map a diffusers state dict one-to-one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NORM_EPS = 1e-6

_ENCODER_BLOCK_TYPE = "DownEncoderBlock2D"
_DECODER_BLOCK_TYPE = "UpDecoderBlock2D"


@dataclasses.dataclass(frozen=True)
class SDVAEConfig:
    """Architecture of an `AutoencoderKL`; the defaults are sd-vae-ft-ema / sd-vae-ft-mse."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    sample_size: int = 256
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "block_out_channels", tuple(int(c) for c in self.block_out_channels)
        )

    @property
    def downsample_factor(self) -> int:
        """Image side / latent side: 2 ** (number of blocks - 1)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], **overrides: Any) -> SDVAEConfig:
        """The config of a diffusers `config.json` (unknown entries ignored) with `overrides`.

        Raises ValueError for settings this implementation does not reproduce (other classes,
        block types, activations or normalisations, a latent shift or per-channel statistics).
        """
        problems = []
        if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
            problems.append(f"_class_name {config['_class_name']!r} (only AutoencoderKL)")
        for key, expected in (
            ("down_block_types", _ENCODER_BLOCK_TYPE),
            ("up_block_types", _DECODER_BLOCK_TYPE),
        ):
            others = sorted({t for t in config.get(key, ()) if t != expected})
            if others:
                problems.append(f"{key} {others} (only {expected} is supported)")
        if config.get("act_fn", "silu") not in ("silu", "swish"):
            problems.append(f"act_fn {config['act_fn']!r} (only silu is supported)")
        if config.get("norm_type", "group") != "group":
            problems.append(f"norm_type {config['norm_type']!r} (only group is supported)")
        for key in ("shift_factor", "latents_mean", "latents_std"):
            if config.get(key) is not None:
                problems.append(f"{key} {config[key]!r} (only a scaling_factor is supported)")
        if problems:
            raise ValueError("unsupported AutoencoderKL config: " + "; ".join(problems))

        field_names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in config.items() if k in field_names and v is not None}
        if isinstance(values.get("sample_size"), list | tuple):
            values["sample_size"] = int(values["sample_size"][0])
        values.update(overrides)
        return cls(**values)


def conv(features: int, kernel_size: int, name: str | None, dtype: Any, **kwargs: Any) -> nn.Conv:
    """A square 2D convolution with float32 params, zero-padded by (kernel_size - 1) / 2."""
    pad = (kernel_size - 1) // 2
    kwargs.setdefault("padding", ((pad, pad), (pad, pad)))
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        **kwargs,
    )


class GroupNorm(nn.Module):
    """GroupNorm over (H, W, C / groups) with statistics in float32: (N, H, W, C) -> same."""

    num_groups: int
    epsilon: float = NORM_EPS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        if c % self.num_groups:
            raise ValueError(
                f"GroupNorm: {c} channels are not divisible into {self.num_groups} groups"
            )
        grouped = x.astype(jnp.float32).reshape(n, h, w, self.num_groups, c // self.num_groups)
        mean = jnp.mean(grouped, axis=(1, 2, 4), keepdims=True)
        var = jnp.mean(jnp.square(grouped - mean), axis=(1, 2, 4), keepdims=True)
        y = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(n, h, w, c)
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return (y * scale + bias).astype(self.dtype)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice plus a (1x1-projected when C changes) skip: (N,H,W,Ci)->Co."""

    out_channels: int
    num_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.silu(GroupNorm(self.num_groups, dtype=self.dtype, name="norm1")(x))
        h = conv(self.out_channels, 3, "conv1", self.dtype)(h)
        h = nn.silu(GroupNorm(self.num_groups, dtype=self.dtype, name="norm2")(h))
        h = conv(self.out_channels, 3, "conv2", self.dtype)(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, "conv_shortcut", self.dtype)(x)
        return x + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions with a residual: (N,H,W,C) -> same.

    GroupNorm, then q, k, v projections; softmax(q k^T / sqrt(C)) in float32; out projection.
    """

    num_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        tokens = GroupNorm(self.num_groups, dtype=self.dtype, name="group_norm")(x)
        tokens = tokens.reshape(n, h * w, c)

        def linear(name: str) -> nn.Dense:
            return nn.Dense(c, dtype=self.dtype, param_dtype=jnp.float32, name=name)

        q, k, v = linear("to_q")(tokens), linear("to_k")(tokens), linear("to_v")(tokens)
        logits = jnp.einsum("nqc,nkc->nqk", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits * (c**-0.5), axis=-1).astype(self.dtype)
        attended = jnp.einsum("nqk,nkc->nqc", weights, v)
        out = linear("to_out")(attended).reshape(n, h, w, c)
        return x + out


class MidBlock(nn.Module):
    """resnet, self-attention (optional), resnet at constant width: (N,H,W,C) -> same."""

    num_groups: int
    add_attention: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        x = ResnetBlock(channels, self.num_groups, self.dtype, name="resnets_0")(x)
        if self.add_attention:
            x = SpatialSelfAttention(self.num_groups, self.dtype, name="attention")(x)
        return ResnetBlock(channels, self.num_groups, self.dtype, name="resnets_1")(x)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a stride-2 conv3x3: (N,H,W,C) -> (N,H/2,W/2,C)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return conv(x.shape[-1], 3, "conv", self.dtype, strides=2, padding=((0, 1), (0, 1)))(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then conv3x3: (N,H,W,C) -> (N,2H,2W,C)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv(x.shape[-1], 3, "conv", self.dtype)(x)


class DownBlock(nn.Module):
    """`num_layers` resnets, then an optional Downsample: (N,H,W,Ci) -> (N,H/2?,W/2?,Co)."""

    out_channels: int
    num_layers: int
    num_groups: int
    add_downsample: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.num_layers):
            x = ResnetBlock(self.out_channels, self.num_groups, self.dtype, name=f"resnets_{j}")(x)
        if self.add_downsample:
            x = Downsample(self.dtype, name="downsample")(x)
        return x


class UpBlock(nn.Module):
    """`num_layers` resnets, then an optional Upsample: (N,H,W,Ci) -> (N,2H?,2W?,Co)."""

    out_channels: int
    num_layers: int
    num_groups: int
    add_upsample: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for j in range(self.num_layers):
            x = ResnetBlock(self.out_channels, self.num_groups, self.dtype, name=f"resnets_{j}")(x)
        if self.add_upsample:
            x = Upsample(self.dtype, name="upsample")(x)
        return x


class Encoder(nn.Module):
    """Images (N, H, W, in_channels) -> moments (N, H/f, W/f, 2 * latent_channels)."""

    config: SDVAEConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, dtype = self.config, self.dtype
        groups = cfg.norm_num_groups
        x = conv(cfg.block_out_channels[0], 3, "conv_in", dtype)(x)
        last = len(cfg.block_out_channels) - 1
        for i, channels in enumerate(cfg.block_out_channels):
            block = DownBlock(
                channels, cfg.layers_per_block, groups, i != last, dtype, name=f"down_blocks_{i}"
            )
            x = block(x)
        x = MidBlock(groups, cfg.mid_block_add_attention, dtype, name="mid_block")(x)
        x = nn.silu(GroupNorm(groups, dtype=dtype, name="conv_norm_out")(x))
        return conv(2 * cfg.latent_channels, 3, "conv_out", dtype)(x)


class Decoder(nn.Module):
    """Latents (N, h, w, latent_channels) -> images (N, h * f, w * f, out_channels)."""

    config: SDVAEConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg, dtype = self.config, self.dtype
        groups = cfg.norm_num_groups
        x = conv(cfg.block_out_channels[-1], 3, "conv_in", dtype)(z)
        x = MidBlock(groups, cfg.mid_block_add_attention, dtype, name="mid_block")(x)
        last = len(cfg.block_out_channels) - 1
        for i, channels in enumerate(reversed(cfg.block_out_channels)):
            block = UpBlock(
                channels, cfg.layers_per_block + 1, groups, i != last, dtype, name=f"up_blocks_{i}"
            )
            x = block(x)
        x = nn.silu(GroupNorm(groups, dtype=dtype, name="conv_norm_out")(x))
        return conv(cfg.out_channels, 3, "conv_out", dtype)(x)


class SDVAE(nn.Module):
    """`AutoencoderKL`: `encode` images to moments, `decode` latents to images (NHWC, float32).

    `__call__` encodes and decodes the posterior mean; it exists to initialise every parameter.
    """

    config: SDVAEConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        cfg = self.config
        self.encoder = Encoder(cfg, self.dtype)
        self.decoder = Decoder(cfg, self.dtype)
        if cfg.use_quant_conv:
            self.quant_conv = conv(2 * cfg.latent_channels, 1, None, self.dtype)
        if cfg.use_post_quant_conv:
            self.post_quant_conv = conv(cfg.latent_channels, 1, None, self.dtype)

    def encode(self, images: jax.Array) -> jax.Array:
        """Images (N, H, W, in) -> moments (N, H/f, W/f, 2C): mean, then logvar in [-30, 20]."""
        moments = self.encoder(images)
        if self.config.use_quant_conv:
            moments = self.quant_conv(moments)
        moments = moments.astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return jnp.concatenate([mean, jnp.clip(logvar, -30.0, 20.0)], axis=-1)

    def decode(self, latents: jax.Array) -> jax.Array:
        """Latents (N, h, w, C) in the VAE's own units -> images (N, h*f, w*f, out), float32."""
        if self.config.use_post_quant_conv:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents).astype(jnp.float32)

    def __call__(self, images: jax.Array) -> jax.Array:
        mean = self.encode(images)[..., : self.config.latent_channels]
        return self.decode(mean)
