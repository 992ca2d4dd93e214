"""The training input pipeline: a latent dataset streamed per process with grain.

The global stream visits the dataset in a fresh permutation each epoch; global batch b is
positions [b G, (b + 1) G) of it and process p reads its slice [b G + p L, b G + (p + 1) L),
so processes never overlap and never miss a record (the last N mod G records of an epoch are
dropped). A random horizontal flip picks the stored moments of the image or of its flip.
The iterator's position is part of the checkpoint, so a resumed run sees the same batches.
"""

from __future__ import annotations

import functools
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from ditjax.data.latent_format import SPLIT, read_latent_info

# Far more positions than any run reads; the stream is effectively endless.
_STREAM_LENGTH = 2**53


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_records: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_records)


@jax.tree_util.register_static
class RecordIndexer:
    """Maps a process's stream position to the record it reads."""

    def __init__(
        self, num_records: int, global_batch: int, process_index: int, process_count: int, seed
    ):
        if global_batch % process_count:
            raise ValueError(
                f"global_batch_size {global_batch} is not divisible by {process_count} processes"
            )
        self.batches_per_epoch = num_records // global_batch
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"the dataset has {num_records} records, fewer than one global batch "
                f"of {global_batch}"
            )
        self.num_records = num_records
        self.global_batch = global_batch
        self.local_batch = global_batch // process_count
        self.process_index = process_index
        self.seed = seed

    def global_position(self, local_position: int) -> int:
        batch, offset = divmod(local_position, self.local_batch)
        return batch * self.global_batch + self.process_index * self.local_batch + offset

    def __call__(self, local_position: int) -> int:
        epoch, within = divmod(
            self.global_position(local_position), self.batches_per_epoch * self.global_batch
        )
        return int(_epoch_permutation(self.num_records, self.seed, epoch)[within])


def _flip_and_cast(example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    flip = rng.integers(2) == 1
    suffix = "_flip" if flip else ""
    return {
        "mean": np.asarray(example["mean" + suffix], np.float32),
        "logvar": np.asarray(example["logvar" + suffix], np.float32),
        "label": np.int32(example["label"]),
    }


def open_latent_source(dataset_dir: str):
    """Random access to a latent dataset's examples (a TFDS ArrayRecord data source)."""
    read_latent_info(dataset_dir)
    return tfds.builder_from_directory(dataset_dir).as_data_source(split=SPLIT)


def make_train_iterator(
    dataset_dir: str,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    worker_count: int = 0,
):
    """This process's endless iterator of batches: `mean`, `logvar` (B_local, h, w, C) float32
    and `label` (B_local,) int32, B_local = global_batch_size / process_count.

    The iterator has `get_state()` / `set_state()` and checkpoints with grain's Orbax handler.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    source = open_latent_source(dataset_dir)
    indexer = RecordIndexer(len(source), global_batch_size, process_index, process_count, seed)
    dataset = (
        grain.MapDataset.range(_STREAM_LENGTH)
        .map(indexer)
        .map(source.__getitem__)
        .random_map(_flip_and_cast, seed=seed)
        .batch(indexer.local_batch, drop_remainder=True)
    )
    if worker_count:
        iter_dataset = dataset.to_iter_dataset().mp_prefetch(
            grain.MultiprocessingOptions(num_workers=worker_count)
        )
    else:
        iter_dataset = dataset.to_iter_dataset(
            grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)
        )
    return iter(iter_dataset)
