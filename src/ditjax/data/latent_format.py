"""The on-disk format of a latent dataset: a TFDS dataset in ArrayRecord files.

Each example holds the autoencoder's posterior moments (float16) for an image and for its
horizontal flip, and the label. `ditjax_latents.json` beside it records how it was made.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

DATASET_NAME = "ditjax_latents"
SPLIT = "train"
FILE_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
INFO_FILE = "ditjax_latents.json"
SKIPPED_FILE = "skipped.txt"
MOMENT_KEYS = ("mean", "logvar", "mean_flip", "logvar_flip")


def latent_features(
    latent_shape: tuple[int, int, int], class_names: list[str]
) -> tfds.features.FeaturesDict:
    """The TFDS features of one example: the four moments (h, w, C) float16, stored as raw
    bytes, and the label."""
    tensors = {
        key: tfds.features.Tensor(shape=latent_shape, dtype=np.float16, encoding="bytes")
        for key in MOMENT_KEYS
    }
    return tfds.features.FeaturesDict(
        {**tensors, "label": tfds.features.ClassLabel(names=class_names)}
    )


def shard_filename(shard: int, num_shards: int) -> str:
    """The file name of shard `shard` of `num_shards`, as TFDS expects it."""
    return f"{DATASET_NAME}-{SPLIT}.array_record-{shard:05d}-of-{num_shards:05d}"


REQUIRED_INFO_KEYS = ("latent_shape", "num_classes", "scale", "autoencoder", "num_examples")


def read_latent_info(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """The `ditjax_latents.json` of a latent dataset: latent_shape [h, w, C], latent_channels,
    scale, num_classes, class_names, autoencoder, image_size, num_examples, ..."""
    # epath reads local paths and bucket URLs (gs://...) alike.
    path = epath.Path(dataset_dir) / INFO_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{os.fspath(dataset_dir)} is not a latent dataset ({path} is missing); write one "
            "with `python -m ditjax.extract_latents`"
        )
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable latent dataset description: {error}") from None
    missing = [key for key in REQUIRED_INFO_KEYS if not isinstance(info, dict) or key not in info]
    if missing:
        raise ValueError(f"{path} is not a latent dataset description (missing {missing})")
    return info
