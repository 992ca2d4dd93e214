"""FID-50K sample files: N samples on every device of every process, resumable, as one .npz.

Sample i is a function of (seed, i) alone: its label is `sample_labels(...)[i]` and all of its
noise comes from the key fold_in(key(seed), i), so device count, process count and batch size
do not change it (up to float rounding where XLA's batch size changes the arithmetic).
"""

from __future__ import annotations

import os
import pathlib

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from ditjax import sample_parts
from ditjax.autoencoder import create_autoencoder
from ditjax.image_grid import save_png
from ditjax.parallel import batch_sharding, create_mesh
from ditjax.sampling import make_image_sample_fn
from ditjax.training.restore import load_for_sampling


def sample_labels(seed: int, num_samples: int, num_classes: int, balanced: bool) -> np.ndarray:
    """Class labels (N,) as a fixed function of (seed, N): uniform draws, or with `balanced`
    exactly N / num_classes of each class in a seeded random order."""
    rng = np.random.default_rng([seed, num_samples])
    if not balanced:
        return rng.integers(0, num_classes, num_samples).astype(np.int32)
    if num_samples % num_classes:
        raise ValueError(
            f"--balanced needs num_samples ({num_samples}) divisible by the number of "
            f"classes ({num_classes})"
        )
    return rng.permutation(np.arange(num_samples) % num_classes).astype(np.int32)


def padded_to(indices: np.ndarray, size: int) -> np.ndarray:
    """int32 `indices` (n <= size,) padded to `size` by repeating the last one."""
    return np.concatenate([indices, np.full(size - len(indices), indices[-1])]).astype(np.int32)


@jax.jit
def per_sample_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
    """fold_in(key, i) for each sample index i (N,), laid out as `indices` is."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def global_batch(values: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """A global array from host values (N, ...) that every process holds in full."""
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])


def _local_rows(images: jax.Array) -> list[tuple[int, np.ndarray]]:
    """(first row, rows) of each distinct shard of a batch-sharded array this process holds."""
    seen, rows = set(), []
    for shard in images.addressable_shards:
        start = shard.index[0].start or 0
        if start not in seen:
            seen.add(start)
            rows.append((start, np.asarray(shard.data)))
    return sorted(rows, key=lambda r: r[0])


def sample_npz(
    checkpoint: str,
    out: str,
    num_samples: int,
    *,
    per_device_batch: int = 32,
    balanced: bool = False,
    step: int | None = None,
    ema: bool = True,
    autoencoder_spec: str | None = None,
    cfg_scale: float = 1.5,
    guidance: str = "first3",
    sampler: str = "ddpm",
    steps: int = 250,
    eta: float = 0.0,
    seed: int = 0,
    images_dir: str | None = None,
    max_chunks: int | None = None,
    progress: bool = True,
) -> str | None:
    """Samples `num_samples` images into `out` (.npz: `arr_0` uint8 (N, H, W, 3), `labels`).

    Chunks of `per_device_batch` x device_count samples, each one jitted program sharded over
    every device; finished chunks are kept in `<out>.parts/` and a rerun with the same
    settings samples only what is missing. Stops after `max_chunks` chunks (returning None)
    if given; else returns `out`. Multi-process runs need `<out>.parts` on a shared file
    system: each process writes the samples its devices made; process 0 assembles.
    """
    if not out.endswith(".npz"):
        raise ValueError(f"--out must end in .npz, got {out!r}")
    if num_samples < 1 or per_device_batch < 1:
        raise ValueError(
            f"num_samples and per_device_batch must be >= 1, got {num_samples}, {per_device_batch}"
        )
    parts = sample_parts.parts_dir(out)
    if os.path.exists(out) and not parts.exists():
        raise FileExistsError(f"{out} already exists; delete it or choose another --out")
    config, model, params, step = load_for_sampling(checkpoint, step=step, ema=ema)
    labels = sample_labels(seed, num_samples, config.num_classes, balanced)
    autoencoder_spec = autoencoder_spec or config.autoencoder
    mesh = create_mesh((-1, 1))
    sharding = batch_sharding(mesh)
    sample = make_image_sample_fn(
        model,
        create_autoencoder(autoencoder_spec),
        out_sharding=sharding,
        latent_shape=(config.latent_size, config.latent_size, config.latent_channels),
        sampler=sampler,
        steps=steps,
        cfg_scale=cfg_scale,
        guidance_mode=guidance,
        eta=eta,
        diffusion_steps=config.diffusion_steps,
    )
    settings = {
        "checkpoint": os.path.abspath(checkpoint),
        "step": int(step),
        "ema": ema,
        "autoencoder": autoencoder_spec,
        "num_samples": num_samples,
        "labels": "balanced" if balanced else "uniform",
        "seed": seed,
        "sampler": sampler,
        "steps": steps,
        "eta": eta,
        "cfg_scale": cfg_scale,
        "guidance": guidance,
    }
    first = jax.process_index() == 0
    if first:
        sample_parts.create_manifest(parts, settings)
    multihost_utils.sync_global_devices("ditjax.sample_npz:manifest")
    sample_parts.check_manifest(parts, settings)
    todo = sample_parts.missing_indices(parts, num_samples)
    multihost_utils.sync_global_devices("ditjax.sample_npz:listed")

    chunk = per_device_batch * jax.device_count()
    base_key = jax.random.key(seed)
    bar = tqdm(
        total=num_samples,
        initial=num_samples - len(todo),
        unit="img",
        desc="sampling",
        disable=not (progress and first),
    )
    for number, offset in enumerate(range(0, len(todo), chunk)):
        if max_chunks is not None and number >= max_chunks:
            bar.close()
            return None
        indices = todo[offset : offset + chunk]
        real = len(indices)
        padded = padded_to(indices, chunk)
        keys = per_sample_keys(base_key, global_batch(padded, sharding))
        images = sample(params, global_batch(labels[padded], sharding), keys)
        for row, block in _local_rows(images):
            block = block[: max(0, real - row)]
            mine = indices[row : row + len(block)]
            for position, start, stop in sample_parts.contiguous_runs(mine):
                run = block[position : position + stop - start]
                if images_dir:
                    for i, image in zip(range(start, stop), run, strict=True):
                        save_png(image, os.path.join(images_dir, f"{i:06d}_class{labels[i]}.png"))
                sample_parts.write_part(parts, start, run, labels[start:stop])
        bar.update(real)
    bar.close()
    multihost_utils.sync_global_devices("ditjax.sample_npz:sampled")
    if first:
        sample_parts.assemble(parts, out, labels)
    multihost_utils.sync_global_devices("ditjax.sample_npz:assembled")
    return str(pathlib.Path(out))
