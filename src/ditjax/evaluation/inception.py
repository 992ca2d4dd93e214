"""Inception-v3 of the 2015 TensorFlow graph (`inception-2015-12-05`), the network of FID,
sFID and Inception Score, in Flax (NHWC).

The architecture is the graph as pytorch-fid rebuilds it: torchvision's Inception-v3 with
1008 classes, no auxiliary head, and the graph's pooling quirks (the average pools of the
35 x 35, 17 x 17 and first 8 x 8 blocks ignore padding; the last block pools by a 3 x 3
stride-1 max). Every convolution is conv (no bias) + BatchNorm (eps 1e-3, stored statistics)
+ ReLU. Weights come from pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`
(`ditjax.convert.load_pytorch_fid_inception`).

Preprocessing follows the TF graph, not pytorch-fid. uint8 images (N, H, W, 3) of any size
become float and are resized to 299 x 299 by the graph's ResizeBilinear, whose legacy rule
(align_corners=False, no half-pixel centres) reads output pixel `i` at source coordinate
`i * in / out`; then `(x - 128) / 128`. pytorch-fid instead resizes with torch's half-pixel
bilinear and scales `2 x - 1` of `x / 255`: its resize samples other source positions, and
its scale maps 255 to 1 where the graph gives 0.9921875. An input already 299 x 299 is not
resized by either, so for it only the scale differs.

Features (`inception_features`), as the ADM evaluation suite reads them from the graph:
`pool` is `pool_3` (N, 2048), `spatial` is `mixed_6/conv` -- the ReLU output of the 1 x 1
branch of the fourth 17 x 17 block (TF `mixed`, `mixed_1`, `mixed_2` are Mixed_5b-5d,
`mixed_3` is Mixed_6a, `mixed_4`-`mixed_7` are Mixed_6b-6e, so `mixed_6` is Mixed_6d) -- its
first 7 channels flattened in NHWC order (N, 17 * 17 * 7 = 2023), and `logits` (N, 1008)
are what the ADM suite's Inception Score takes the softmax of: `pool @ W` with the weights
of the graph's `softmax/logits` layer but not its bias (as in the original IS code).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

INPUT_SIZE = 299
NUM_CLASSES = 1008
POOL_FEATURES = 2048
SPATIAL_CHANNELS = 7
SPATIAL_FEATURES = 17 * 17 * SPATIAL_CHANNELS
BN_EPSILON = 1e-3

PrecisionLike = Any


class ConvBN(nn.Module):
    """Conv (no bias) + inference BatchNorm + ReLU; `padding` is (rows, cols) on each side."""

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            precision=self.precision,
            kernel_init=nn.initializers.he_normal(),
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
    """35 x 35 block (Mixed_5b-5d): 64 + 64 + 96 + `pool_features` channels."""

    pool_features: int
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda *a, **k: ConvBN(*a, precision=self.precision, **k)  # noqa: E731
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        pool = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, pool], axis=-1)


class InceptionB(nn.Module):
    """35 -> 17 reduction (Mixed_6a): 384 + 96 + input channels."""

    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda *a, **k: ConvBN(*a, precision=self.precision, **k)  # noqa: E731
        b3 = conv(384, (3, 3), strides=2, name="branch3x3")(x)
        d = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        d = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(d)
        d = conv(96, (3, 3), strides=2, name="branch3x3dbl_3")(d)
        return jnp.concatenate([b3, d, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
    """17 x 17 block (Mixed_6b-6e) with factorised 7 x 7 convolutions: 4 x 192 channels.

    Returns the block's output and its 1 x 1 branch (the TF graph's `mixed_N/conv`).
    """

    channels_7x7: int
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        conv = lambda *a, **k: ConvBN(*a, precision=self.precision, **k)  # noqa: E731
        c7 = self.channels_7x7
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        d = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        d = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(d)
        d = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(d)
        d = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(d)
        d = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(d)
        pool = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, d, pool], axis=-1), b1


class InceptionD(nn.Module):
    """17 -> 8 reduction (Mixed_7a): 320 + 192 + input channels."""

    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda *a, **k: ConvBN(*a, precision=self.precision, **k)  # noqa: E731
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
    """8 x 8 block (Mixed_7b, Mixed_7c): 320 + 768 + 768 + 192 = 2048 channels.

    `max_pool` selects the pool branch of Mixed_7c (3 x 3 stride-1 max) over the average
    pool that ignores padding (Mixed_7b).
    """

    max_pool: bool = False
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = lambda *a, **k: ConvBN(*a, precision=self.precision, **k)  # noqa: E731
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        d = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        d = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(d)
        d = jnp.concatenate(
            [
                conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(d),
                conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(d),
            ],
            axis=-1,
        )
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        pool = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, d, pool], axis=-1)


class ScoreLogits(nn.Module):
    """The graph's 1008-way classifier as the Inception Score reads it: `pool @ W`, (N, 1008).

    The ADM suite (and the original Inception Score code) takes the softmax of the product
    without the layer's bias; the bias is kept in the tree so the weights file converts whole.
    """

    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, pool: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (pool.shape[-1], NUM_CLASSES), jnp.float32
        )
        self.param("bias", nn.initializers.zeros, (NUM_CLASSES,), jnp.float32)
        return jnp.dot(pool, kernel, precision=self.precision)


class FIDInceptionV3(nn.Module):
    """The FID Inception on preprocessed images (N, 299, 299, 3) in [-1, 1).

    Returns `pool` (N, 2048), `spatial` (N, 2023) and `logits` (N, 1008), all float32.
    Submodules are named as in pytorch-fid's state dict (`Mixed_5b.branch1x1.conv`, ...).
    """

    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        p = self.precision
        x = ConvBN(32, (3, 3), strides=2, precision=p, name="Conv2d_1a_3x3")(x)
        x = ConvBN(32, (3, 3), precision=p, name="Conv2d_2a_3x3")(x)
        x = ConvBN(64, (3, 3), padding=(1, 1), precision=p, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_stride2(x)
        x = ConvBN(80, (1, 1), precision=p, name="Conv2d_3b_1x1")(x)
        x = ConvBN(192, (3, 3), precision=p, name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_stride2(x)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, precision=p, name=name)(x)
        x = InceptionB(precision=p, name="Mixed_6a")(x)
        branches_1x1 = {}
        for name, c7 in (
            ("Mixed_6b", 128),
            ("Mixed_6c", 160),
            ("Mixed_6d", 160),
            ("Mixed_6e", 192),
        ):
            x, branches_1x1[name] = InceptionC(c7, precision=p, name=name)(x)
        x = InceptionD(precision=p, name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, precision=p, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, precision=p, name="Mixed_7c")(x)
        pool = jnp.mean(x, axis=(1, 2))
        logits = ScoreLogits(precision=p, name="fc")(pool)
        mixed_6_conv = branches_1x1["Mixed_6d"][..., :SPATIAL_CHANNELS]
        spatial = mixed_6_conv.reshape(mixed_6_conv.shape[0], -1)
        return {"pool": pool, "spatial": spatial, "logits": logits}


def _legacy_source_positions(in_size: int, out_size: int) -> tuple[np.ndarray, ...]:
    """Per output index: lower and upper source index and the weight of the upper one,
    by TF1's ResizeBilinear rule (source = out * in / out_size, in float32)."""
    scale = np.float32(in_size / out_size)
    source = np.arange(out_size, dtype=np.float32) * scale
    lower = np.floor(source)
    upper = np.minimum(np.ceil(source), in_size - 1)
    return (
        np.minimum(lower, in_size - 1).astype(np.int32),
        upper.astype(np.int32),
        (source - lower).astype(np.float32),
    )


def resize_bilinear_tf1(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Float images (N, H, W, C) -> (N, size[0], size[1], C) by the legacy TF ResizeBilinear
    (align_corners=False, half_pixel_centers=False), interpolating as that kernel does."""
    (y0, y1, wy), (x0, x1, wx) = (
        _legacy_source_positions(images.shape[1], size[0]),
        _legacy_source_positions(images.shape[2], size[1]),
    )
    top, bottom = images[:, y0], images[:, y1]
    wx = wx[None, None, :, None]
    top = top[:, :, x0] + (top[:, :, x1] - top[:, :, x0]) * wx
    bottom = bottom[:, :, x0] + (bottom[:, :, x1] - bottom[:, :, x0]) * wx
    return top + (bottom - top) * wy[None, :, None, None]


def preprocess(images_uint8: jax.Array) -> jax.Array:
    """uint8 (N, H, W, 3) -> float32 (N, 299, 299, 3): the TF graph's resize (skipped when
    already 299 x 299) and its scale `(x - 128) / 128`."""
    x = images_uint8.astype(jnp.float32)
    if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
        x = resize_bilinear_tf1(x, (INPUT_SIZE, INPUT_SIZE))
    return (x - 128.0) / 128.0


def check_images(images: Any) -> None:
    """Raises ValueError unless `images` is a uint8 array (N, H, W, 3) with N, H, W >= 1."""
    dtype, shape = getattr(images, "dtype", None), getattr(images, "shape", None)
    if dtype is None or shape is None:
        raise ValueError(f"images must be a uint8 array (N, H, W, 3), got {type(images).__name__}")
    if np.dtype(dtype) != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3) in [0, 255], got dtype {dtype}")
    if len(shape) != 4 or shape[3] != 3 or min(shape) < 1:
        raise ValueError(f"images must be uint8 (N, H, W, 3) with N, H, W >= 1, got {shape}")


_MODEL = FIDInceptionV3()


@jax.jit
def _features(params: Any, images_uint8: jax.Array) -> dict[str, jax.Array]:
    return _MODEL.apply(params, preprocess(images_uint8))


def inception_features(params: Any, images_uint8: Any) -> dict[str, jax.Array]:
    """FID Inception features of uint8 images (N, H, W, 3), any N, H and W.

    `params` holds both Flax collections, `{"params": ..., "batch_stats": ...}`
    (`init_inception_params` or `ditjax.convert.load_pytorch_fid_inception`). Returns float32
    `pool` (N, 2048), `spatial` (N, 2023) and `logits` (N, 1008); compiled once per shape.
    """
    check_images(images_uint8)
    return _features(params, images_uint8)


def inception_param_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
    """Shape of every leaf of the variables, by path (`("params", "fc", "kernel")`, ...)."""
    # The tree does not depend on the image size; 75 x 75 is the smallest the net takes.
    dummy = jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32)
    abstract = jax.eval_shape(_MODEL.init, jax.random.key(0), dummy)
    return {path: tuple(leaf.shape) for path, leaf in flatten_dict(abstract).items()}


def init_inception_params(key: jax.Array) -> dict[str, Any]:
    """Random `{"params", "batch_stats"}` (float32 numpy) in the tree `inception_features`
    takes: He-scaled normal convolutions, a 1/fan-in-scaled fc, identity batch norm."""
    shapes = inception_param_shapes()
    kernels = [path for path in shapes if path[-1] == "kernel"]
    sizes = [math.prod(shapes[path]) for path in kernels]
    # One draw for every kernel: far cheaper to compile than a draw per layer.
    noise = np.asarray(jax.random.normal(key, (sum(sizes),), jnp.float32))
    starts = np.cumsum([0, *sizes[:-1]])
    flat = {}
    for path, start, size in zip(kernels, starts, sizes, strict=True):
        shape = shapes[path]
        gain = 1.0 if path[1] == "fc" else 2.0
        std = np.float32(np.sqrt(gain / math.prod(shape[:-1])))
        flat[path] = noise[start : start + size].reshape(shape) * std
    for path, shape in shapes.items():
        if path not in flat:
            fill = np.ones if path[-1] in ("scale", "var") else np.zeros
            flat[path] = fill(shape, np.float32)
    return unflatten_dict(flat)
