"""The ADM center crop that the reference DiT uses to prepare ImageNet."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ditjax.data.image_modes import to_rgb


def center_crop_adm(image: Image.Image, image_size: int) -> np.ndarray:
    """uint8 (S, S, 3) center crop of `image`, S = `image_size`, as the reference computes it.

    The image is converted to RGB by `to_rgb` (the reference loads every image as RGB),
    halved with a BOX filter while its short side is at least 2S, resized with BICUBIC so that
    the short side is S (the long side rounded), and cropped at the floor of the centred
    offsets.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    image = to_rgb(image)
    while min(image.size) >= 2 * image_size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = image_size / min(image.size)
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top = (array.shape[0] - image_size) // 2
    left = (array.shape[1] - image_size) // 2
    return array[top : top + image_size, left : left + image_size]


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 images of any shape -> float32 in [-1, 1] (x / 127.5 - 1)."""
    return np.asarray(images, np.float32) / 127.5 - 1.0
