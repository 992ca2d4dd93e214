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
import math
import os
from collections.abc import Sequence
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from array_record.python.array_record_data_source import ArrayRecordDataSource
from tensorflow_datasets.proto import tf_example_pb2

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


# (mean key, logvar key) of the stored moments, indexed by the flip.
_MOMENT_KEYS = (("mean", "logvar"), ("mean_flip", "logvar_flip"))


def open_latent_records(dataset_dir: str) -> ArrayRecordDataSource:
    """Random access to a latent dataset's serialized examples (bytes), in the order of
    `open_latent_source`, without decoding them."""
    read_latent_info(dataset_dir)
    split = tfds.builder_from_directory(dataset_dir).info.splits[SPLIT]
    return ArrayRecordDataSource([os.fspath(path) for path in split.filepaths])


class _ReadBatch:
    """(records, flips) -> a batch dict decoded from the serialized examples.

    Each example is parsed once and only the moments its flip selects are kept; they are
    joined and converted to float32 in one vectorised step per field.
    """

    def __init__(self, records: ArrayRecordDataSource, latent_shape: Sequence[int]):
        self.records = records
        self.latent_shape = tuple(latent_shape)

    def __call__(self, choice: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        records, flips = choice
        serialized = self.records.__getitems__(np.asarray(records).tolist())
        labels = np.empty(len(serialized), np.int32)
        means, logvars = [], []
        for i, (example, flip) in enumerate(
            zip(serialized, np.asarray(flips).tolist(), strict=True)
        ):
            feature = tf_example_pb2.Example.FromString(example).features.feature
            mean_key, logvar_key = _MOMENT_KEYS[flip]
            means.append(feature[mean_key].bytes_list.value[0])
            logvars.append(feature[logvar_key].bytes_list.value[0])
            labels[i] = feature["label"].int64_list.value[0]
        return {
            "mean": self._to_float32(means, "mean"),
            "logvar": self._to_float32(logvars, "logvar"),
            "label": labels,
        }

    def _to_float32(self, buffers: list[bytes], name: str) -> np.ndarray:
        data = b"".join(buffers)
        shape = (len(buffers), *self.latent_shape)
        if len(data) != 2 * math.prod(shape):
            raise ValueError(
                f"stored {name} moments hold {len(data)} bytes for {len(buffers)} examples, "
                f"not float16 {self.latent_shape} each"
            )
        return np.frombuffer(data, np.float16).reshape(shape).astype(np.float32)


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
    info = read_latent_info(dataset_dir)
    records = open_latent_records(dataset_dir)
    batches = process_choices(
        len(records),
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        random_flip=random_flip,
    ).map(_ReadBatch(records, info["latent_shape"]))
    if worker_count:
        if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags
            flags.FLAGS.mark_as_parsed()
        # Each worker reads its batches in order with one thread; a deep per-worker read
        # pool would only compete with the other workers for the host's cores.
        iter_dataset = batches.to_iter_dataset(
            grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch_batches)
        ).mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=worker_count, per_worker_buffer_size=prefetch_batches
            )
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
