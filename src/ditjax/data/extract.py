"""Writing a latent dataset: ADM-crop every image, encode it and its flip on all local devices,
store the posterior moments in ArrayRecord shards.

Shard k holds source examples [k E, (k + 1) E), E = examples_per_shard, so shard boundaries
follow the source order and agree between runs. Shards are written under `<out>.partial/`,
each to a temporary name renamed when complete; a re-run redoes only unfinished shards,
whichever process finished the others. With several processes, process p writes the shards
k = p mod P. Once all are complete, process 0 writes the TFDS metadata and publishes the
directory as `out` (`ditjax_latents.json` last), so a dataset is visible only once complete.
`out` may be a bucket URL; see `ditjax.data.storage`."""

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
from etils import epath
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
from ditjax.data.storage import (
    as_path,
    is_remote,
    local_file_for,
    publish_directory,
    write_text_atomically,
)
from ditjax.parallel.distributed import wait_for_all_processes

SETTINGS_FILE = "extraction_settings.json"
# How long processes wait for the slowest one to finish its shards, and process 0 to publish.
_ENCODE_WAIT_S = 7 * 24 * 3600
_PUBLISH_WAIT_S = 24 * 3600
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


def _write_shard(
    path: epath.Path, features: tfds.features.FeaturesDict, examples: list[dict], tag: str
) -> None:
    # tf.train.Example holds its features in a map, serialized in an order that varies between
    # processes unless asked to be deterministic: shards would differ by the process writing them.
    serializer = tfds.core.example_serializer.ExampleSerializer(features.get_serialized_info())
    with local_file_for(path, tag) as local:
        writer = array_record_module.ArrayRecordWriter(local, "group_size:1")
        for example in examples:
            proto = serializer.get_tf_example(features.encode_example(example))
            writer.write(proto.SerializeToString(deterministic=True))
        writer.close()


def _write_json(path: epath.Path, value: Any, tag: str) -> None:
    write_text_atomically(path, json.dumps(value, indent=2), tag)


def _describe_mismatch(found: dict[str, Any], wanted: dict[str, Any], keys) -> str:
    return ", ".join(
        f"{key} {found.get(key)!r} (now {wanted[key]!r})"
        for key in keys
        if found.get(key) != wanted[key]
    )


def _write_tfds_metadata(directory: epath.Path, features, shard_lengths: list[int]) -> None:
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


def _report_name(shard: int, num_shards: int) -> str:
    return shard_filename(shard, num_shards) + ".json"


def _finish(
    partial: epath.Path,
    out: epath.Path,
    features: tfds.features.FeaturesDict,
    settings: dict[str, Any],
    num_shards: int,
    tag: str,
) -> None:
    """Checks that every shard in `partial` is complete, writes the dataset's metadata and
    publishes it as `out`."""
    missing = [
        shard_filename(shard, num_shards)
        for shard in range(num_shards)
        if not (partial / shard_filename(shard, num_shards)).exists()
        or not (partial / _report_name(shard, num_shards)).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} shard(s) of {partial} are not complete ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); run the extraction again, on any number "
            "of processes, to finish them"
        )
    shard_lengths, skipped = [], []
    for shard in range(num_shards):
        report = json.loads((partial / _report_name(shard, num_shards)).read_text())
        shard_lengths.append(report["num_examples"])
        skipped.extend(report["skipped"])
    num_examples = sum(shard_lengths)
    if num_examples == 0:
        raise ValueError(
            f"none of the {settings['source_examples']} images could be read; see {partial}"
        )
    _write_tfds_metadata(partial, features, shard_lengths)
    write_text_atomically(partial / SKIPPED_FILE, "".join(line + "\n" for line in skipped), tag)
    info = {
        **settings,
        "num_examples": num_examples,
        "num_skipped": len(skipped),
        "num_shards": num_shards,
    }
    _write_json(partial / INFO_FILE, info, tag)
    reports = {_report_name(shard, num_shards) for shard in range(num_shards)}
    publish_directory(partial, out, last=INFO_FILE, drop=frozenset({*reports, SETTINGS_FILE}))


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
    process_index: int | None = None,
    process_count: int | None = None,
) -> ExtractionSummary:
    """Encodes every image of `source` and its horizontal flip into a latent dataset.

    Each stored example has `mean`, `logvar`, `mean_flip`, `logvar_flip` (h, w, C) float16,
    h = w = image_size / autoencoder.downsample, and `label` int64. Unreadable images are
    skipped and listed in `skipped.txt`. If `out_dir` already holds a complete dataset made
    with the same settings, nothing is done; with other settings it is an error.

    `out_dir` is a local directory or a bucket URL (gs://...). Of P processes
    (jax.process_count() by default) process p encodes shards p, p + P, ... on its local
    devices, so `out_dir` must be storage they all see; process 0 publishes the dataset once
    every shard is complete, and every process returns after that. The files are the same
    whatever the number of processes or devices.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    out = as_path(out_dir)
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

    if (out / INFO_FILE).exists():
        info = read_latent_info(out)
        mismatch = _describe_mismatch(info, settings, _MATCHING_SETTINGS)
        if mismatch:
            raise FileExistsError(
                f"{out} already holds a latent dataset made with other settings: {mismatch}; "
                "choose another output directory or delete it"
            )
        print(f"{out} already holds this complete latent dataset; nothing to do", flush=True)
        return ExtractionSummary(
            os.fspath(out), info["num_examples"], info.get("num_skipped", 0), info["num_shards"], 0
        )
    partial = out.parent / f"{out.name}.partial"
    # In a bucket an interrupted publication leaves some files in `out`; it is finished below.
    resuming_publication = is_remote(out) and partial.exists()
    if (
        out.exists()
        and not resuming_publication
        and (not out.is_dir() or any(True for _ in out.iterdir()))
    ):
        raise FileExistsError(f"{out} exists and is not a latent dataset; choose another one")
    if num_source < 1:
        raise ValueError("the source has no images")

    tag = f"p{process_index}"  # distinct temporary names for concurrent processes
    settings_path = partial / SETTINGS_FILE
    if settings_path.exists():
        earlier = json.loads(settings_path.read_text())
        mismatch = _describe_mismatch(earlier, settings, _RESUME_SETTINGS)
        if mismatch:
            raise FileExistsError(
                f"{partial} holds an unfinished extraction with other settings: {mismatch}; "
                "delete it to start over"
            )
    else:
        partial.mkdir(parents=True, exist_ok=True)
        _write_json(settings_path, settings, tag)  # every process writes the same bytes

    num_devices = jax.local_device_count()
    batch_size = math.ceil(batch_size / num_devices) * num_devices
    num_shards = math.ceil(num_source / examples_per_shard)
    features = latent_features(tuple(latent_shape), class_names)
    start_encoding = make_encoder(autoencoder, batch_size)
    my_shards = range(process_index, num_shards, process_count)

    reused = 0
    bar = tqdm(
        total=sum(min(examples_per_shard, num_source - s * examples_per_shard) for s in my_shards),
        disable=not progress,
        unit="img",
        desc="extracting" if process_count == 1 else f"extracting (process {process_index})",
    )
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for shard in my_shards:
            begin = shard * examples_per_shard
            end = min(begin + examples_per_shard, num_source)
            path = partial / shard_filename(shard, num_shards)
            report = partial / _report_name(shard, num_shards)
            if path.exists() and report.exists():  # finished earlier, by any process
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
            _write_shard(path, features, stored, tag)
            _write_json(report, {"num_examples": len(stored), "skipped": skipped}, tag)
    bar.close()

    multiprocess = jax.process_count() > 1
    if multiprocess:
        wait_for_all_processes(f"ditjax-extract-encoded:{out}", _ENCODE_WAIT_S)
    if process_index == 0:
        _finish(partial, out, features, settings, num_shards, tag)
    if multiprocess:
        wait_for_all_processes(f"ditjax-extract-published:{out}", _PUBLISH_WAIT_S)
    info = read_latent_info(out)
    num_examples, num_skipped = info["num_examples"], info["num_skipped"]
    if process_index == 0:
        print(
            f"wrote {num_examples} examples to {out}; skipped {num_skipped} unreadable image(s)"
            + (f", listed in {out / SKIPPED_FILE}" if num_skipped else ""),
            flush=True,
        )
    if reused:
        print(f"reused {reused} shard(s) finished by an earlier run", flush=True)
    return ExtractionSummary(os.fspath(out), num_examples, num_skipped, num_shards, reused)
