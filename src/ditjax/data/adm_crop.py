"""The ADM center crop used by the reference DiT to prepare ImageNet."""

from __future__ import annotations

import numpy as np
from PIL import Image


def center_crop_adm(image: Image.Image, image_size: int) -> np.ndarray:
    """uint8 (S, S, 3) center crop of `image`, exactly as the reference prepares images.

    Halve with a BOX filter while the short side is at least 2S, resize with BICUBIC so the
    short side is S (rounding the long side), then crop the center at floor offsets.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)
    array = np.asarray(image.convert("RGB"))
    top = (array.shape[0] - image_size) // 2
    left = (array.shape[1] - image_size) // 2
    return array[top : top + image_size, left : left + image_size]


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [-1, 1]."""
    return np.asarray(images, np.float32) / 127.5 - 1.0
