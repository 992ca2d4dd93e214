"""Writing a latent dataset: crop, encode image and flip on every local device, store.

Shards are written under `<out>.partial/` and renamed into place when complete, so a re-run
after an interruption redoes only unfinished shards, and the dataset appears at `out` only
once everything is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from ditjax.autoencoder import Autoencoder
from ditjax.data.adm_crop import center_crop_adm
from ditjax.data.latent_format import (
    DATASET_NAME,
    FILE_TEMPLATE,
    INFO_FILE,
    SKIPPED_FILE,
    SPLIT,
    latent_features,
    read_latent_info,
    shard_filename,
)
from ditjax.data.sources import SourceItem


@dataclasses.dataclass
class ExtractionSummary:
    """What an extraction wrote."""

    out_dir: str
    num_examples: int
    num_skipped: int
    num_shards: int
    shards_reused: int


def make_encoder(autoencoder: Autoencoder, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """images uint8 (B, S, S, 3) -> float16 moments (2, B, h, w, 2C) for images and flips,
    jitted once and split over the local devices."""
    devices = jax.local_devices()
    mesh = Mesh(np.asarray(devices), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))

    @jax.jit
    def encode(images):
        x = images.astype(np.float32) / 127.5 - 1.0
        both = jax.numpy.concatenate([x, x[:, :, ::-1]], axis=0)
        moments = autoencoder.encode(both).astype(jax.numpy.float16)
        return moments.reshape(2, x.shape[0], *moments.shape[1:])

    def run(images: np.ndarray) -> np.ndarray:
        n = len(images)
        padded = np.zeros((batch_size, *images.shape[1:]), np.uint8)
        padded[:n] = images
        return np.asarray(encode(jax.device_put(padded, sharding)))[:, :n]

    return run


def _chunks(items: Iterable[SourceItem], size: int):
    chunk: list[SourceItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_shard(path: str, features, examples: list[dict[str, Any]]) -> None:
    tmp = path + ".tmp"
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    for example in examples:
        writer.write(features.serialize_example(example))
    writer.close()
    os.replace(tmp, path)


def extract_latents(
    source,
    autoencoder: Autoencoder,
    image_size: int,
    out_dir: str,
    *,
    batch_size: int = 64,
    examples_per_shard: int = 2048,
    progress: bool = True,
    source_spec: str = "",
) -> ExtractionSummary:
    """Encodes every image of `source` (and its flip) into a latent dataset at `out_dir`."""
    if os.path.exists(os.path.join(out_dir, INFO_FILE)):
        info = read_latent_info(out_dir)
        print(f"{out_dir} already holds a complete latent dataset; nothing to do")
        return ExtractionSummary(
            out_dir, info["num_examples"], info.get("num_skipped", 0), info["num_shards"], 0
        )
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a latent dataset; choose another --out")
    if image_size % autoencoder.downsample:
        raise ValueError(
            f"image_size {image_size} is not divisible by the autoencoder's downsampling "
            f"{autoencoder.downsample}"
        )
    num_devices = jax.local_device_count()
    batch_size = math.ceil(batch_size / num_devices) * num_devices
    side = image_size // autoencoder.downsample
    latent_shape = (side, side, autoencoder.latent_channels)
    class_names = list(source.class_names)
    features = latent_features(latent_shape, class_names)
    num_shards = max(1, math.ceil(len(source) / examples_per_shard))
    partial = out_dir.rstrip("/") + ".partial"
    os.makedirs(partial, exist_ok=True)
    encode = make_encoder(autoencoder, batch_size)

    reused = 0
    bar = tqdm(total=len(source), disable=not progress, unit="img", desc="extracting")
    for shard, items in enumerate(_chunks(source, examples_per_shard)):
        path = os.path.join(partial, shard_filename(shard, num_shards))
        report = path + ".json"
        if os.path.exists(path) and os.path.exists(report):
            reused += 1
            bar.update(len(items))
            continue
        examples, skipped = [], []
        for batch in _chunks(items, batch_size):
            crops, labels = [], []
            for item in batch:
                try:
                    crops.append(center_crop_adm(item.load(), image_size))
                    labels.append(item.label)
                except Exception as error:  # an unreadable image is reported, not fatal
                    skipped.append(f"{item.key}\t{type(error).__name__}: {error}")
            if crops:
                moments = encode(np.stack(crops))
                c = autoencoder.latent_channels
                for i, label in enumerate(labels):
                    examples.append(
                        {
                            "mean": moments[0, i, ..., :c],
                            "logvar": moments[0, i, ..., c:],
                            "mean_flip": moments[1, i, ..., :c],
                            "logvar_flip": moments[1, i, ..., c:],
                            "label": label,
                        }
                    )
            bar.update(len(batch))
        _write_shard(path, features, examples)
        with open(report + ".tmp", "w") as f:
            json.dump({"num_examples": len(examples), "skipped": skipped}, f)
        os.replace(report + ".tmp", report)
    bar.close()

    shard_lengths, skipped = [], []
    for shard in range(num_shards):
        path = os.path.join(partial, shard_filename(shard, num_shards))
        with open(path + ".json") as f:
            report = json.load(f)
        shard_lengths.append(report["num_examples"])
        skipped.extend(report["skipped"])
        os.remove(path + ".json")
    template = tfds.core.ShardedFileTemplate(
        data_dir=partial,
        template=FILE_TEMPLATE,
        dataset_name=DATASET_NAME,
        split=SPLIT,
        filetype_suffix="array_record",
    )
    split_info = tfds.core.SplitInfo(
        name=SPLIT, shard_lengths=shard_lengths, num_bytes=0, filename_template=template
    )
    tfds.folder_dataset.write_metadata(
        data_dir=partial,
        features=features,
        split_infos=[split_info],
        filename_template=FILE_TEMPLATE,
        check_data=False,
    )
    with open(os.path.join(partial, SKIPPED_FILE), "w") as f:
        f.write("".join(line + "\n" for line in skipped))
    info = {
        "autoencoder": autoencoder.name,
        "scale": autoencoder.scale,
        "image_size": image_size,
        "latent_shape": list(latent_shape),
        "num_classes": len(class_names),
        "class_names": class_names,
        "num_examples": sum(shard_lengths),
        "num_skipped": len(skipped),
        "num_shards": num_shards,
        "source": source_spec,
    }
    with open(os.path.join(partial, INFO_FILE), "w") as f:
        json.dump(info, f, indent=2)
    if os.path.exists(out_dir):
        os.rmdir(out_dir)  # empty, checked above
    shutil.move(partial, out_dir)
    print(
        f"wrote {info['num_examples']} examples to {out_dir}; skipped {len(skipped)} "
        f"unreadable image(s)"
        + (f", listed in {os.path.join(out_dir, SKIPPED_FILE)}" if skipped else "")
    )
    if reused:
        logging.info("reused %d finished shard(s) from an earlier run", reused)
    return ExtractionSummary(out_dir, info["num_examples"], len(skipped), num_shards, reused)
