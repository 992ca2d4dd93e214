"""A small classifier of the demo set, to score class-conditional samples.

Softmax regression on colour statistics and a coarse 8 x 8 view of each image, trained by
full-batch gradient descent in JAX: enough to tell the ten coloured shapes apart (each has
its own colour). `silhouettes` removes the colour, for a classifier that must see the shape.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# Floor on a feature's training spread (features are fractions and intensities in [0, 1]).
MIN_FEATURE_STD = 0.05


@dataclasses.dataclass(frozen=True)
class DemoClassifier:
    """Feature normalisation and softmax weights."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: np.ndarray


def demo_features(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3), S a multiple of 8 -> float32 (N, F): the image pooled to 8 x 8, the
    colour of the brightest and most saturated pixels, and a 4 x 4 x 4 colour histogram of
    the foreground."""
    x = np.asarray(images, np.float32) / 255.0
    n, side = len(x), x.shape[1]
    if x.shape[1:] != (side, side, 3) or side % 8:
        raise ValueError(f"expected square RGB images with a side divisible by 8, got {x.shape}")
    block = side // 8
    pooled = x.reshape(n, 8, block, 8, block, 3).mean(axis=(2, 4)).reshape(n, -1)
    num_top = max(4, side * side // 25)
    saturation = x.max(-1) - x.min(-1)
    score = (saturation + x.mean(-1)).reshape(n, -1)
    top = np.argsort(score, axis=1)[:, -num_top:]
    flat = x.reshape(n, -1, 3)
    top_colour = np.take_along_axis(flat, top[..., None], axis=1).mean(axis=1)
    bins = np.minimum((flat * 4).astype(np.int32), 3)
    codes = bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]
    foreground = score >= np.take_along_axis(score, top[:, :1], axis=1)
    hist = np.stack(
        [np.bincount(c[f], minlength=64) for c, f in zip(codes, foreground, strict=True)]
    )
    hist = hist / np.maximum(hist.sum(1, keepdims=True), 1)
    return np.concatenate([pooled, top_colour, hist], axis=1).astype(np.float32)


def train_demo_classifier(
    images: np.ndarray, labels: np.ndarray, seed: int = 0, steps: int = 500
) -> DemoClassifier:
    """Fits the classifier to uint8 images (N, S, S, 3) and labels (N,)."""
    features = demo_features(images)
    # A colour bin that no or almost no training image fills (47 of the 259 features at 16 px
    # have spread 0, one 0.0025) would otherwise scale a sample's small mass there by up to
    # ~1e6 and decide its class by that alone.
    mean, std = features.mean(0), np.maximum(features.std(0), MIN_FEATURE_STD)
    x = jnp.asarray((features - mean) / std)
    y = jnp.asarray(labels, jnp.int32)
    num_classes = int(labels.max()) + 1
    key = jax.random.key(seed)
    params = {
        "w": jax.random.normal(key, (x.shape[1], num_classes)) * 0.01,
        "b": jnp.zeros((num_classes,)),
    }

    def loss(p):
        logits = x @ p["w"] + p["b"]
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1).mean()
        return nll + 1e-3 * jnp.sum(p["w"] ** 2)

    @jax.jit
    def fit(p):
        def step(p, _):
            g = jax.grad(loss)(p)
            return jax.tree.map(lambda a, b: a - 0.5 * b, p, g), None

        return jax.lax.scan(step, p, None, length=steps)[0]

    params = fit(params)
    return DemoClassifier(mean, std, np.asarray(params["w"]), np.asarray(params["b"]))


def classify(classifier: DemoClassifier, images: np.ndarray) -> np.ndarray:
    """Predicted labels (N,) for uint8 images (N, S, S, 3) of the size it was trained on."""
    x = (demo_features(images) - classifier.mean) / classifier.std
    return np.argmax(x @ classifier.weights + classifier.bias, axis=1)


def silhouettes(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) -> uint8 (N, S, S, 3) grey images of each pixel's colour distance from
    the image's background (the median of its border pixels), scaled to the image's maximum:
    the shape without its colour, so that a classifier of these must recognise the shape."""
    x = np.asarray(images, np.float32)
    border = np.concatenate(
        [x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1
    )  # (N, 4S - 4, 3)
    background = np.median(border, axis=1)[:, None, None, :]
    distance = np.linalg.norm(x - background, axis=-1)
    scale = np.maximum(distance.max(axis=(1, 2), keepdims=True), 1e-6)
    grey = np.round(255.0 * distance / scale).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
