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

DATASET_NAME = "ditjax_latents"
SPLIT = "train"
FILE_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
INFO_FILE = "ditjax_latents.json"
SKIPPED_FILE = "skipped.txt"
MOMENT_KEYS = ("mean", "logvar", "mean_flip", "logvar_flip")


def latent_features(latent_shape: tuple[int, int, int], class_names: list[str]):
    """The TFDS features of one example."""
    tensors = {k: tfds.features.Tensor(shape=latent_shape, dtype=np.float16) for k in MOMENT_KEYS}
    return tfds.features.FeaturesDict(
        {**tensors, "label": tfds.features.ClassLabel(names=class_names)}
    )


def shard_filename(shard: int, num_shards: int) -> str:
    """The file name of shard `shard` of `num_shards`, as TFDS expects it."""
    return f"{DATASET_NAME}-{SPLIT}.array_record-{shard:05d}-of-{num_shards:05d}"


def read_latent_info(dataset_dir: str) -> dict[str, Any]:
    """The `ditjax_latents.json` of a latent dataset (latent_shape, scale, num_classes, ...)."""
    path = os.path.join(dataset_dir, INFO_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{dataset_dir} is not a latent dataset ({INFO_FILE} is missing); write one with "
            "`python -m ditjax.extract_latents`"
        )
    with open(path) as f:
        return json.load(f)
