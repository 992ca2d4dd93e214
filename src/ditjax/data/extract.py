"""Writing a latent dataset: ADM-crop every image, encode it and its flip on all local devices,
store the posterior moments in ArrayRecord shards.

Shard k holds source examples [k E, (k + 1) E), E = examples_per_shard, so shard boundaries
follow the source order and agree between runs. Shards are written under `<out>.partial/`,
each to a temporary name renamed when complete; a re-run redoes only unfinished shards. The
TFDS metadata is written last and the directory is renamed to `out`, so a dataset is visible
only once it is complete.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
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
from ditjax.data.sources import ImageSource, SourceExample

SETTINGS_FILE = "extraction_settings.json"
# Settings that must agree between a dataset (or an unfinished one) and a new extraction.
_MATCHING_SETTINGS = ("autoencoder", "scale", "image_size", "latent_shape", "class_names")
_RESUME_SETTINGS = (*_MATCHING_SETTINGS, "source_examples", "examples_per_shard", "source")


@dataclasses.dataclass
class ExtractionSummary:
    """What an extraction wrote (or found already written) at `out_dir`."""

    out_dir: str
    num_examples: int
    num_skipped: int
    num_shards: int
    shards_reused: int


def make_encoder(
    autoencoder: Autoencoder, batch_size: int
) -> Callable[[np.ndarray], Callable[[], np.ndarray]]:
    """A function that starts encoding uint8 crops (n, S, S, 3), n <= batch_size, and returns
    a function that waits for the float16 moments (2, n, h, w, 2C) of the crops and of their
    horizontal flips. Batches are padded to `batch_size` and split over the local devices.

    `autoencoder.encode` is called directly, not inside another jit, so that parameters it
    holds are passed to its own compiled function rather than baked in as constants.
    """
    mesh = Mesh(np.asarray(jax.local_devices()), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))

    @jax.jit
    def to_model_range_and_flip(images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = images.astype(jnp.float32) / 127.5 - 1.0
        return x, x[:, :, ::-1]

    @jax.jit
    def to_float16(moments: jax.Array, flipped_moments: jax.Array) -> jax.Array:
        return jnp.stack([moments, flipped_moments]).astype(jnp.float16)

    def start(images: np.ndarray) -> Callable[[], np.ndarray]:
        n = len(images)
        padded = np.zeros((batch_size, *images.shape[1:]), np.uint8)
        padded[:n] = images
        x, flipped = to_model_range_and_flip(jax.device_put(padded, sharding))
        moments = to_float16(autoencoder.encode(x), autoencoder.encode(flipped))  # not awaited
        return lambda: np.asarray(moments)[:, :n]

    return start


def _crop(example: SourceExample, image_size: int) -> tuple[np.ndarray | None, str | None]:
    if example.image is None:
        return None, example.error or "unreadable image"
    try:
        return center_crop_adm(example.image, image_size), None
    except Exception as error:  # an image that cannot be cropped is reported, not fatal
        return None, f"{type(error).__name__}: {error}"


def _batches(examples: Iterator[SourceExample], size: int) -> Iterator[list[SourceExample]]:
    batch: list[SourceExample] = []
    for example in examples:
        batch.append(example)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode_shard(
    examples: Iterator[SourceExample],
    start_encoding: Callable[[np.ndarray], Callable[[], np.ndarray]],
    *,
    image_size: int,
    batch_size: int,
    latent_channels: int,
    pool: concurrent.futures.Executor,
    on_batch: Callable[[int], None],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Examples of one shard -> (stored examples, "key<TAB>error" lines of skipped ones).

    The device encodes batch k while the host crops batch k + 1.
    """
    stored: list[dict[str, Any]] = []
    skipped: list[str] = []
    in_flight: tuple[Callable[[], np.ndarray], list[int]] | None = None

    def store(wait: Callable[[], np.ndarray], labels: list[int]) -> None:
        moments = wait()
        c = latent_channels
        for i, label in enumerate(labels):
            stored.append(
                {
                    "mean": moments[0, i, ..., :c],
                    "logvar": moments[0, i, ..., c:],
                    "mean_flip": moments[1, i, ..., :c],
                    "logvar_flip": moments[1, i, ..., c:],
                    "label": label,
                }
            )

    for batch in _batches(examples, batch_size):
        crops, labels = [], []
        for example, (crop, error) in zip(
            batch, pool.map(lambda e: _crop(e, image_size), batch), strict=True
        ):
            if crop is None:
                skipped.append(f"{example.key}\t{error}")
            else:
                crops.append(crop)
                labels.append(example.label)
        if in_flight is not None:
            store(*in_flight)
            in_flight = None
        if crops:
            in_flight = (start_encoding(np.stack(crops)), labels)
        on_batch(len(batch))
    if in_flight is not None:
        store(*in_flight)
    return stored, skipped


def _write_shard(path: str, features: tfds.features.FeaturesDict, examples: list[dict]) -> None:
    tmp = path + ".tmp"
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    for example in examples:
        writer.write(features.serialize_example(example))
    writer.close()
    os.replace(tmp, path)


def _write_json(path: str, value: Any) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".tmp", path)


def _describe_mismatch(found: dict[str, Any], wanted: dict[str, Any], keys) -> str:
    return ", ".join(
        f"{key} {found.get(key)!r} (now {wanted[key]!r})"
        for key in keys
        if found.get(key) != wanted[key]
    )


def _write_tfds_metadata(directory: str, features, shard_lengths: list[int]) -> None:
    template = tfds.core.ShardedFileTemplate(
        data_dir=directory,
        template=FILE_TEMPLATE,
        dataset_name=DATASET_NAME,
        split=SPLIT,
        filetype_suffix="array_record",
    )
    split_info = tfds.core.SplitInfo(
        name=SPLIT, shard_lengths=shard_lengths, num_bytes=0, filename_template=template
    )
    tfds.folder_dataset.write_metadata(
        data_dir=directory,
        features=features,
        split_infos=[split_info],
        filename_template=FILE_TEMPLATE,
        check_data=False,
    )


def extract_latents(
    source: ImageSource,
    autoencoder: Autoencoder,
    image_size: int,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 64,
    examples_per_shard: int = 2048,
    progress: bool = True,
    source_spec: str = "",
    autoencoder_spec: str = "",
) -> ExtractionSummary:
    """Encodes every image of `source` and its horizontal flip into a latent dataset.

    Each stored example has `mean`, `logvar`, `mean_flip`, `logvar_flip` (h, w, C) float16,
    h = w = image_size / autoencoder.downsample, and `label` int64. Unreadable images are
    skipped and listed in `skipped.txt`. If `out_dir` already holds a complete dataset made
    with the same settings, nothing is done; with other settings it is an error.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    if image_size < 1 or batch_size < 1 or examples_per_shard < 1:
        raise ValueError(
            "image_size, batch_size and examples_per_shard must be positive, got "
            f"{image_size}, {batch_size}, {examples_per_shard}"
        )
    if image_size % autoencoder.downsample:
        raise ValueError(
            f"image_size {image_size} is not divisible by the downsampling factor "
            f"{autoencoder.downsample} of autoencoder {autoencoder.name}"
        )
    side = image_size // autoencoder.downsample
    latent_shape = [side, side, autoencoder.latent_channels]
    class_names = list(source.class_names)
    num_source = len(source)
    settings = {
        "autoencoder": autoencoder.name,
        "autoencoder_spec": autoencoder_spec,
        "scale": float(autoencoder.scale),
        "image_size": image_size,
        "latent_shape": latent_shape,
        "latent_channels": autoencoder.latent_channels,
        "downsample": autoencoder.downsample,
        "class_names": class_names,
        "num_classes": len(class_names),
        "source": source_spec,
        "source_examples": num_source,
        "examples_per_shard": examples_per_shard,
    }

    if os.path.exists(os.path.join(out_dir, INFO_FILE)):
        info = read_latent_info(out_dir)
        mismatch = _describe_mismatch(info, settings, _MATCHING_SETTINGS)
        if mismatch:
            raise FileExistsError(
                f"{out_dir} already holds a latent dataset made with other settings: {mismatch}; "
                "choose another output directory or delete it"
            )
        print(f"{out_dir} already holds this complete latent dataset; nothing to do", flush=True)
        return ExtractionSummary(
            out_dir, info["num_examples"], info.get("num_skipped", 0), info["num_shards"], 0
        )
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"{out_dir} exists and is not a latent dataset; choose another one")
    if num_source < 1:
        raise ValueError("the source has no images")

    partial = out_dir + ".partial"
    settings_path = os.path.join(partial, SETTINGS_FILE)
    if os.path.exists(settings_path):
        with open(settings_path) as f:
            earlier = json.load(f)
        mismatch = _describe_mismatch(earlier, settings, _RESUME_SETTINGS)
        if mismatch:
            raise FileExistsError(
                f"{partial} holds an unfinished extraction with other settings: {mismatch}; "
                "delete it to start over"
            )
    else:
        os.makedirs(partial, exist_ok=True)
        _write_json(settings_path, settings)

    num_devices = jax.local_device_count()
    batch_size = math.ceil(batch_size / num_devices) * num_devices
    num_shards = math.ceil(num_source / examples_per_shard)
    features = latent_features(tuple(latent_shape), class_names)
    start_encoding = make_encoder(autoencoder, batch_size)

    reused = 0
    bar = tqdm(total=num_source, disable=not progress, unit="img", desc="extracting")
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for shard in range(num_shards):
            begin = shard * examples_per_shard
            end = min(begin + examples_per_shard, num_source)
            path = os.path.join(partial, shard_filename(shard, num_shards))
            report = path + ".json"
            if os.path.exists(path) and os.path.exists(report):
                reused += 1
                bar.update(end - begin)
                continue
            stored, skipped = _encode_shard(
                source.iter_range(begin, end),
                start_encoding,
                image_size=image_size,
                batch_size=batch_size,
                latent_channels=autoencoder.latent_channels,
                pool=pool,
                on_batch=bar.update,
            )
            _write_shard(path, features, stored)
            _write_json(report, {"num_examples": len(stored), "skipped": skipped})
    bar.close()

    shard_lengths, skipped = [], []
    for shard in range(num_shards):
        with open(os.path.join(partial, shard_filename(shard, num_shards)) + ".json") as f:
            report = json.load(f)
        shard_lengths.append(report["num_examples"])
        skipped.extend(report["skipped"])
    num_examples = sum(shard_lengths)
    if num_examples == 0:
        raise ValueError(f"none of the {num_source} images could be read; see {partial}")
    _write_tfds_metadata(partial, features, shard_lengths)
    with open(os.path.join(partial, SKIPPED_FILE), "w") as f:
        f.write("".join(line + "\n" for line in skipped))
    info = {
        **settings,
        "num_examples": num_examples,
        "num_skipped": len(skipped),
        "num_shards": num_shards,
    }
    _write_json(os.path.join(partial, INFO_FILE), info)
    if os.path.exists(out_dir):
        os.rmdir(out_dir)  # an empty directory, checked above
    os.rename(partial, out_dir)  # the dataset becomes visible, complete
    for shard in range(num_shards):
        os.remove(os.path.join(out_dir, shard_filename(shard, num_shards)) + ".json")
    os.remove(os.path.join(out_dir, SETTINGS_FILE))

    print(
        f"wrote {num_examples} examples to {out_dir}; skipped {len(skipped)} unreadable "
        "image(s)" + (f", listed in {os.path.join(out_dir, SKIPPED_FILE)}" if skipped else ""),
        flush=True,
    )
    if reused:
        print(f"reused {reused} shard(s) finished by an earlier run", flush=True)
    return ExtractionSummary(out_dir, num_examples, len(skipped), num_shards, reused)
