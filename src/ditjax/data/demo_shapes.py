"""The embedded demo set: ten classes of coloured shapes at 32 x 32, generated from a seed.

Each class is one shape in one colour, drawn at a random position and size on a random dark,
grey-ish background, so the class is obvious to the eye and quick to learn. Strokes are at
least 4.5 px wide and shapes have a radius of 9.5 to 12.5 px, so that every shape, the thin ones
(cross, ring, bars, plus, frame) included, keeps strokes of 2 px or more when the demo
trains at 16 x 16.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 32
DEMO_CLASS_NAMES = (
    "red_disc",
    "blue_square",
    "green_triangle",
    "yellow_cross",
    "magenta_ring",
    "cyan_diamond",
    "orange_hbar",
    "white_vbar",
    "purple_plus",
    "lime_frame",
)
_COLOURS = np.array(
    [
        (230, 40, 40),
        (50, 90, 240),
        (40, 200, 60),
        (240, 220, 40),
        (230, 50, 220),
        (40, 220, 230),
        (250, 140, 20),
        (245, 245, 245),
        (140, 60, 220),
        (170, 250, 90),
    ],
    np.float32,
)


def shape_mask(label: int, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of class `label`'s shape, centred at offsets (dy, dx), radius r."""
    ady, adx = np.abs(dy), np.abs(dx)
    thick = max(4.5, r / 2.5)
    shapes = {
        0: dy**2 + dx**2 <= r**2,
        1: (ady <= r * 0.8) & (adx <= r * 0.8),
        2: (dy <= r * 0.7) & (dy >= -r) & (adx <= (dy + r) * 0.6),
        3: (np.abs(dy - dx) <= thick) | (np.abs(dy + dx) <= thick),
        4: (dy**2 + dx**2 <= r**2) & (dy**2 + dx**2 >= (r - thick) ** 2),
        5: ady + adx <= r,
        6: (ady <= thick * 0.7) & (adx <= r),
        7: (adx <= thick * 0.7) & (ady <= r),
        8: ((ady <= thick * 0.55) & (adx <= r)) | ((adx <= thick * 0.55) & (ady <= r)),
        9: (np.maximum(ady, adx) <= r * 0.9) & (np.maximum(ady, adx) >= r * 0.9 - thick),
    }
    return (ady <= r) & (adx <= r) & shapes[label]


def generate_demo_images(num_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), labels int64 (N,)), N = 10 * num_per_class, class-major
    interleaved (labels 0..9, 0..9, ...); deterministic for a seed."""
    rng = np.random.default_rng(seed)
    n = num_per_class * len(DEMO_CLASS_NAMES)
    labels = np.tile(np.arange(len(DEMO_CLASS_NAMES)), num_per_class).astype(np.int64)
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        background = rng.uniform(10, 70) + rng.uniform(-12, 12, size=3)
        radius = rng.uniform(9.5, 12.5)
        cy, cx = rng.uniform(radius, IMAGE_SIZE - radius, size=2)
        mask = shape_mask(int(label), ys - cy, xs - cx, radius)
        colour = _COLOURS[label] * rng.uniform(0.85, 1.0)
        image = np.broadcast_to(background, (IMAGE_SIZE, IMAGE_SIZE, 3)).copy()
        image[mask] = colour
        image += rng.normal(0, 3, size=image.shape)
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
    return images, labels


def demo_images_at(images: np.ndarray, image_size: int) -> np.ndarray:
    """Demo images (N, 32, 32, 3) prepared as training sees them: ADM crop to `image_size`."""
    if image_size == IMAGE_SIZE:
        return images
    from PIL import Image

    from ditjax.data.adm_crop import center_crop_adm

    return np.stack([center_crop_adm(Image.fromarray(x), image_size) for x in images])


class _GeneratedDatasetInfo(tfds.core.DatasetInfo):
    """The DatasetInfo of a set generated here, which has no published metadata to copy.

    TFDS looks for published metadata whenever a builder is made for a set not yet prepared,
    and makes an empty temporary folder for it first, which it leaves behind.
    """

    def initialize_from_bucket(self) -> None:
        pass


class DemoShapes(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of the demo set: train (1000 per class) and test (100 per class).

    Registered as "demo_shapes" on import; generated offline, in ArrayRecord files unless
    another `file_format` is asked for.
    """

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Ten classes of coloured shapes at 32 x 32.",
        "2.0.0": "Larger shapes with strokes of at least 4.5 px (2 px or more at 16 x 16).",
    }
    TRAIN_PER_CLASS = 1000
    TEST_PER_CLASS = 100

    def __init__(self, *, file_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(file_format=file_format, **kwargs)
        if file_format is None and not self.is_prepared():  # prepared data keeps its format
            self.info.set_file_format("array_record", override=True)

    def _info(self) -> tfds.core.DatasetInfo:
        return _GeneratedDatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                    "label": tfds.features.ClassLabel(names=DEMO_CLASS_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # everything is generated; nothing is downloaded
        return {
            "train": self._generate_examples(self.TRAIN_PER_CLASS, seed=0),
            "test": self._generate_examples(self.TEST_PER_CLASS, seed=1),
        }

    def _generate_examples(
        self, num_per_class: int, seed: int
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        images, labels = generate_demo_images(num_per_class, seed)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": image, "label": int(label)}
