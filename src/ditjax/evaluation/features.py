"""Inception features of big image sets on every device, and the reference statistics file.

An evaluation source is an `.npz` in the ADM evaluator's format (`arr_0` uint8
(N, H, W, 3); optionally precomputed `mu`, `sigma`, `mu_s`, `sigma_s`, and the `pool`
features that `save_reference_stats` adds) or a folder of PNG / JPEG images. Images are read
lazily: an uncompressed `.npz` member is memory-mapped and a folder decodes only the rows
asked for, so each process reads just the slice its devices work on.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import struct
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from PIL import Image
from tqdm import tqdm

from ditjax.atomic_files import replacing
from ditjax.data.sources import IMAGE_EXTENSIONS
from ditjax.evaluation.metrics import feature_statistics
from ditjax.parallel import batch_sharding, create_mesh

STATISTICS_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
POOL_KEY = "pool"
IMAGES_KEY = "arr_0"
_DECODE_THREADS = min(8, os.cpu_count() or 1)
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """(shape, fortran order, dtype) from an open .npy stream, or None for an unknown version."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    return None


def npz_member_header(path: str, name: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of array `name` in the .npz at `path` from its header alone, or None
    if the archive has no such array. Raises ValueError naming `path` if it is no .npz."""
    try:
        with zipfile.ZipFile(path) as archive:
            if f"{name}.npy" not in archive.namelist():
                return None
            with archive.open(f"{name}.npy") as f:
                header = _read_npy_header(f)
    except (zipfile.BadZipFile, ValueError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npz file: {error}") from None
    if header is None:
        with np.load(path) as data:
            array = data[name]
        return array.shape, array.dtype
    shape, _, dtype = header
    return tuple(shape), dtype


def open_npz_array(path: str, name: str) -> np.ndarray:
    """Array `name` of the .npz at `path`: memory-mapped (read-only) when the member is stored
    uncompressed in C order, as `np.savez` and `python -m ditjax.sample` write it; else loaded."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        stored = info.compress_type == zipfile.ZIP_STORED
    if stored:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            signature, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(
                f.read(_ZIP_LOCAL_HEADER.size)
            )
            if signature == b"PK\x03\x04":
                f.seek(name_length + extra_length, os.SEEK_CUR)
                header = _read_npy_header(f)
                if header is not None and not header[1] and not header[2].hasobject:
                    shape, _, dtype = header
                    return np.memmap(path, dtype, "r", offset=f.tell(), shape=tuple(shape))
    with np.load(path) as data:
        return data[name]


class ImageFolder:
    """The PNG / JPEG images under a folder (recursively, sorted by path) as a lazy uint8
    array (N, H, W, 3): indexing with a slice decodes just those files, converted to RGB.

    Every image must have the size of the first; the constructor reads each file's header
    and raises ValueError naming the first that differs or cannot be read.
    """

    def __init__(self, root: str):
        self.root = pathlib.Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.files = sorted(
            p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        if not self.files:
            raise ValueError(f"image folder {root} has no {'/'.join(IMAGE_EXTENSIONS)} files")
        size = None
        for path in self.files:
            try:
                with Image.open(path) as image:
                    current = image.size
            except (OSError, Image.DecompressionBombError) as error:
                raise ValueError(f"cannot read image {path}: {error}") from None
            if size is None:
                size = current
            elif current != size:
                raise ValueError(
                    f"image {path} is {current[0]}x{current[1]}, but the images of {root} "
                    f"are {size[0]}x{size[1]} ({self.files[0]}); all must have one size"
                )
        width, height = size
        self.shape = (len(self.files), height, width, 3)
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, path: pathlib.Path) -> np.ndarray:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        if array.shape != self.shape[1:]:
            raise ValueError(f"image {path} decodes to {array.shape}, expected {self.shape[1:]}")
        return array

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError(f"ImageFolder supports slices of rows only, got {index!r}")
        files = self.files[index]
        if not files:
            return np.zeros((0, *self.shape[1:]), np.uint8)
        with concurrent.futures.ThreadPoolExecutor(_DECODE_THREADS) as pool:
            return np.stack(list(pool.map(self._decode, files)))


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """FID statistics of a set: pool `mu` (D,) and `sigma` (D, D), spatial `mu_s` and
    `sigma_s`, and the pool features (N, D) for precision / recall when known."""

    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray
    sigma_s: np.ndarray
    pool: np.ndarray | None = None


def reference_stats(features: Mapping[str, np.ndarray]) -> ReferenceStats:
    """`ReferenceStats` of extracted features (a mapping with `pool` and `spatial`)."""
    mu, sigma = feature_statistics(features["pool"])
    mu_s, sigma_s = feature_statistics(features["spatial"])
    return ReferenceStats(mu, sigma, mu_s, sigma_s, np.asarray(features["pool"], np.float32))


def save_reference_stats(path: str, stats: ReferenceStats) -> str:
    """Writes `stats` to the .npz `path` atomically (a temporary file, then a rename): `mu`,
    `sigma`, `mu_s`, `sigma_s` as the ADM evaluator reads them, and `pool` when known."""
    if not path.endswith(".npz"):
        raise ValueError(f"a statistics file must end in .npz, got {path!r}")
    arrays = {key: np.asarray(getattr(stats, key)) for key in STATISTICS_KEYS}
    if stats.pool is not None:
        arrays[POOL_KEY] = np.asarray(stats.pool, np.float32)
    with replacing(path) as f:
        np.savez(f, **arrays)
    return str(pathlib.Path(path))


@dataclasses.dataclass(frozen=True)
class EvaluationSource:
    """What a reference or sample path holds: lazy `images` (N, H, W, 3) uint8 and/or
    precomputed `stats` (whose `pool` may be None); at least one is not None."""

    path: str
    images: Any | None
    stats: ReferenceStats | None

    @property
    def num_images(self) -> int | None:
        return None if self.images is None else len(self.images)


def _check_images_header(path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype != np.uint8:
        raise ValueError(f"{path}: {IMAGES_KEY} must be uint8 images, got dtype {dtype}")
    if len(shape) != 4 or shape[-1] != 3 or min(shape) < 1:
        raise ValueError(f"{path}: {IMAGES_KEY} must be (N, H, W, 3) images, got shape {shape}")


def _load_stats(path: str, keys: set[str]) -> ReferenceStats:
    missing = [key for key in STATISTICS_KEYS if key not in keys]
    if missing:
        raise ValueError(f"{path} has precomputed statistics but lacks {', '.join(missing)}")
    with np.load(path) as data:
        values = {key: np.asarray(data[key], np.float64) for key in STATISTICS_KEYS}
        pool = np.asarray(data[POOL_KEY], np.float32) if POOL_KEY in keys else None
    for mean, cov in (("mu", "sigma"), ("mu_s", "sigma_s")):
        d = values[mean].shape
        if len(d) != 1 or values[cov].shape != (d[0], d[0]):
            raise ValueError(
                f"{path}: {mean} {values[mean].shape} and {cov} {values[cov].shape} must be "
                "(D,) and (D, D)"
            )
    if pool is not None and (pool.ndim != 2 or pool.shape[1] != len(values["mu"])):
        raise ValueError(
            f"{path}: {POOL_KEY} must be (N, {len(values['mu'])}) to match mu, got {pool.shape}"
        )
    return ReferenceStats(pool=pool, **values)


def open_source(path: str, *, need_images: bool = False) -> EvaluationSource:
    """Opens an `.npz` (ADM format) or an image folder without decoding any pixels.

    An `.npz`'s `arr_0` must be uint8 (N, H, W, 3); `mu, sigma, mu_s, sigma_s`, when present,
    are loaded (all four or an error) with `pool` if there. With `need_images` (samples, whose
    Inception Score needs logits) a file without `arr_0` is an error. Errors name `path`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    if os.path.isdir(path):
        return EvaluationSource(path, ImageFolder(path), None)
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path} is not readable")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is neither an image folder nor an .npz file")
    with zipfile.ZipFile(path) as archive:
        keys = {n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")}
    images = None
    if IMAGES_KEY in keys:
        shape, dtype = npz_member_header(path, IMAGES_KEY)
        _check_images_header(path, shape, dtype)
        images = open_npz_array(path, IMAGES_KEY)
    elif need_images:
        raise ValueError(f"{path} has no {IMAGES_KEY} images (keys: {sorted(keys)})")
    stats = _load_stats(path, keys) if keys & set(STATISTICS_KEYS) else None
    if images is None and stats is None:
        raise ValueError(
            f"{path} has neither {IMAGES_KEY} images nor {'/'.join(STATISTICS_KEYS)} "
            f"statistics (keys: {sorted(keys)})"
        )
    return EvaluationSource(path, images, stats)


def _read_rows(images, start: int, stop: int) -> np.ndarray:
    """Rows start..stop-1 of `images`, those past its end repeating its last row."""
    n = len(images)
    real = np.asarray(images[min(start, n) : min(stop, n)])
    if len(real) == stop - start:
        return real
    last = real[-1:] if len(real) else np.asarray(images[n - 1 : n])
    return np.concatenate([real, np.repeat(last, stop - start - len(real), axis=0)])


def extract_features(
    features_fn: Callable[[jax.Array], Mapping[str, jax.Array]],
    images,
    *,
    batch_size: int = 256,
    progress: bool = True,
    mesh: Mesh | None = None,
    desc: str = "features",
) -> dict[str, np.ndarray]:
    """Features of all images (N, H, W, 3) uint8: each mapping value of
    `features_fn(batch)` for every row, in order, as float32 (N, ...) on every process.

    `images` is anything with `shape` and slicing (an array, `np.memmap`, `ImageFolder`).
    `features_fn` is a jitted function of a global uint8 batch (B, H, W, 3) split over every
    device of `mesh` (default: all devices); B is `batch_size` rounded up to a multiple of
    the device count, and the last batch is padded with copies of the last image, which are
    dropped. Each process reads only the rows of its own devices; reading the next batch
    overlaps the device work of the current one.
    """
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[0] < 1:
        raise ValueError(f"images must be (N, H, W, C) with N >= 1, got shape {shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mesh = mesh or create_mesh((-1, 1))
    sharding = batch_sharding(mesh)
    num_devices = mesh.devices.size
    batch = -(-batch_size // num_devices) * num_devices
    n = shape[0]

    def global_batch(start: int) -> jax.Array:
        def read(index: tuple[slice, ...]) -> np.ndarray:
            rows = index[0]
            lo = start + (rows.start or 0)
            hi = start + (batch if rows.stop is None else rows.stop)
            return np.ascontiguousarray(_read_rows(images, lo, hi)[(slice(None), *index[1:])])

        return jax.make_array_from_callback((batch, *shape[1:]), sharding, read)

    results: dict[str, np.ndarray] = {}

    def collect(start: int, outputs: Mapping[str, jax.Array]) -> None:
        if not isinstance(outputs, Mapping):
            raise TypeError(f"features_fn must return a mapping, got {type(outputs).__name__}")
        gathered = multihost_utils.process_allgather(dict(outputs), tiled=True)
        count = min(batch, n - start)
        for name, value in gathered.items():
            value = np.asarray(value)
            if value.ndim < 1 or value.shape[0] != batch:
                raise ValueError(
                    f"features_fn output {name!r} has shape {value.shape}; expected a leading "
                    f"batch axis of {batch}"
                )
            if name not in results:
                results[name] = np.empty((n, *value.shape[1:]), np.float32)
            results[name][start : start + count] = value[:count]
        bar.update(count)

    bar = tqdm(
        total=n,
        unit="img",
        desc=desc,
        disable=not (progress and jax.process_index() == 0),
    )
    pending = None
    for start in range(0, n, batch):
        outputs = features_fn(global_batch(start))
        if pending is not None:
            collect(*pending)
        pending = (start, outputs)
    collect(*pending)
    bar.close()
    return results
