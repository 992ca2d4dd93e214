"""The training input pipeline: a latent dataset streamed per process with grain.

The global stream visits the N records in a fresh random permutation every epoch (endlessly);
each epoch is cut into floor(N / G) global batches of G and the last N mod G positions of the
permutation are dropped. Of global batch b, process p reads positions [p L, (p + 1) L), with
L = G / P for P processes, so within an epoch the processes read disjoint records and together
every record that is not dropped. A random horizontal flip, drawn per global position, picks
the stored moments of the image or of its flip. Record order and flips depend only on the
seed, never on the number of processes: the global batches are the same on any topology.
The iterator's position can be checkpointed and restored exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from ditjax.data.latent_format import SPLIT, read_latent_info

# Far more positions than any run reads (a multiple of every batch size): an endless stream.
_STREAM_LENGTH = 2**53


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_records: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_records)


class GlobalOrder:
    """Maps a position of the global stream to the record it reads."""

    def __init__(self, num_records: int, global_batch_size: int, seed: int):
        batches_per_epoch = num_records // global_batch_size
        if batches_per_epoch < 1:
            raise ValueError(
                f"the dataset has {num_records} records, fewer than one global batch of "
                f"{global_batch_size}"
            )
        self.num_records = num_records
        self.positions_per_epoch = batches_per_epoch * global_batch_size
        self.seed = seed

    def __call__(self, position: int) -> int:
        epoch, within = divmod(position, self.positions_per_epoch)
        return int(_epoch_permutation(self.num_records, self.seed, epoch)[within])


def _draw_flip(record: int, rng: np.random.Generator) -> tuple[int, bool]:
    return record, bool(rng.integers(2))


def _never_flip(record: int) -> tuple[int, bool]:
    return record, False


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    """B_local = global_batch_size / process_count; an error unless it divides exactly."""
    if global_batch_size < 1 or process_count < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not a positive multiple of the "
            f"{process_count} processes"
        )
    return global_batch_size // process_count


def process_choices(
    num_records: int,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    random_flip: bool = True,
) -> grain.MapDataset:
    """The batches of (records, flips) that process `process_index` reads, in order.

    Element b is (records int64 (B_local,), flips bool (B_local,)) of global batch b. With
    `random_flip=False` no flipped moments are read (for data whose mirror image means
    something else, such as digits and text); the record order does not change.
    """
    local = local_batch_size(global_batch_size, process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    order = GlobalOrder(num_records, global_batch_size, seed)
    records = grain.MapDataset.range(_STREAM_LENGTH).map(order)
    choices = records.random_map(_draw_flip, seed=seed) if random_flip else records.map(_never_flip)
    return choices.batch(local, drop_remainder=True)[process_index::process_count]


def process_record_indices(
    num_records: int,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    num_batches: int,
) -> np.ndarray:
    """int64 (num_batches, B_local): the records this process reads in its first batches."""
    choices = process_choices(
        num_records,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    return np.stack([np.asarray(choices[b][0], np.int64) for b in range(num_batches)])


class _ReadBatch:
    """(records, flips) -> a batch dict read from the latent data source."""

    def __init__(self, source: Sequence[dict[str, Any]]):
        self.source = source

    def __call__(self, choice: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        records, flips = choice
        examples = self.source.__getitems__([int(r) for r in records])
        suffixes = ["_flip" if flip else "" for flip in flips]
        return {
            "mean": np.stack(
                [e["mean" + s] for e, s in zip(examples, suffixes, strict=True)]
            ).astype(np.float32),
            "logvar": np.stack(
                [e["logvar" + s] for e, s in zip(examples, suffixes, strict=True)]
            ).astype(np.float32),
            "label": np.asarray([e["label"] for e in examples], np.int32),
        }


def open_latent_source(dataset_dir: str) -> Sequence[dict[str, Any]]:
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
    prefetch_batches: int = 2,
    random_flip: bool = True,
) -> grain.DatasetIterator:
    """This process's endless iterator of batches: dicts of numpy arrays `mean`, `logvar`
    (B_local, h, w, C) float32 and `label` (B_local,) int32, B_local = global_batch_size /
    process_count (jax.process_index() / jax.process_count() by default).

    `worker_count` > 0 reads in that many worker processes, else in threads. `random_flip`
    False never reads the flipped moments. The iterator has
    `get_state()` / `set_state()`; see `iterator_checkpoint_args` for Orbax.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    source = open_latent_source(dataset_dir)
    batches = process_choices(
        len(source),
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        random_flip=random_flip,
    ).map(_ReadBatch(source))
    if worker_count:
        if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags
            flags.FLAGS.mark_as_parsed()
        iter_dataset = batches.to_iter_dataset().mp_prefetch(
            grain.MultiprocessingOptions(num_workers=worker_count)
        )
    else:
        iter_dataset = batches.to_iter_dataset(
            grain.ReadOptions(num_threads=prefetch_batches, prefetch_buffer_size=prefetch_batches)
        )
    return iter(iter_dataset)


def iterator_checkpoint_handler() -> grain.checkpoint.CheckpointHandler:
    """The Orbax item handler of a train iterator (for `ocp.CheckpointManager(item_handlers=)`)."""
    return grain.checkpoint.CheckpointHandler()


def iterator_checkpoint_args(
    iterator: grain.DatasetIterator, save: bool
) -> grain.checkpoint.CheckpointSave | grain.checkpoint.CheckpointRestore:
    """Orbax args that save the iterator's position (`save=True`) or restore it in place.

    Use them as one item of `ocp.args.Composite`, with `iterator_checkpoint_handler()` as that
    item's handler; each process saves its own position.
    """
    if save:
        return grain.checkpoint.CheckpointSave(iterator)
    return grain.checkpoint.CheckpointRestore(iterator)
