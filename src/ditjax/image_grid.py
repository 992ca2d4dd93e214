"""Image grids and PNG files."""

from __future__ import annotations

import io
import math

import numpy as np
from etils import epath
from PIL import Image

from ditjax.atomic_files import replacing


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """uint8 images (N, H, W, 3) -> one uint8 grid image, `columns` wide, with padding."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images (N, H, W, 1|3), got shape {images.shape}")
    n, h, w, c = images.shape
    columns = columns or min(n, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    grid = np.zeros(
        (rows * (h + padding) + padding, columns * (w + padding) + padding, c), np.uint8
    )
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = image
    return grid


def save_png(image: np.ndarray, path: str, upscale: int = 1) -> str:
    """Writes a uint8 (H, W, 3) image; local files atomically (temp file, then rename), URLs
    such as gs://... through etils.epath. Returns the path."""
    image = np.asarray(image)
    if upscale > 1:
        image = image.repeat(upscale, axis=0).repeat(upscale, axis=1)
    picture = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    if "://" in path:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        target = epath.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buffer.getvalue())
        return path
    with replacing(path) as f:
        picture.save(f, format="PNG")
    return path
