"""`python -m ditjax.sample --checkpoint=DIR --labels=207,360 --out=grid.png`: sample a grid.

With `--out=samples.npz` or `--num_samples=N`: N samples for FID (ADM's .npz format) on every
device, resumable; see `ditjax.sample_npz`.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
from absl import app, flags

from ditjax.autoencoder import create_autoencoder
from ditjax.diffusion import GUIDANCE_MODES
from ditjax.host_memory import retain_freed_host_memory
from ditjax.image_grid import make_grid, save_png
from ditjax.parallel import batch_sharding, create_mesh
from ditjax.parallel.process_flags import initialize_from_flags
from ditjax.sample_npz import sample_npz
from ditjax.sampling import SAMPLERS, make_image_sample_fn
from ditjax.training.restore import load_for_sampling

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A run's workdir or checkpoints directory.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_EMA = flags.DEFINE_bool("ema", True, "Sample with the EMA params (--noema: raw params).")
_AUTOENCODER = flags.DEFINE_string(
    "autoencoder", None, "identity | sd-vae:PATH (default: the run's config.autoencoder)."
)
_LABELS = flags.DEFINE_list(
    "labels",
    ["207", "360", "387", "974", "88", "979", "417", "279"],
    "Class labels, one sample each.",
)
_REPEATS = flags.DEFINE_integer("repeats", 1, "Samples per label.")
_CFG_SCALE = flags.DEFINE_float("cfg_scale", 4.0, "Classifier-free guidance scale (1: none).")
_GUIDANCE = flags.DEFINE_enum(
    "guidance",
    "all",
    list(GUIDANCE_MODES),
    "Guide all latent channels, or the first 3 as the reference does.",
)
_SAMPLER = flags.DEFINE_enum("sampler", "ddpm", list(SAMPLERS), "Sampler.")
_STEPS = flags.DEFINE_integer("steps", 250, "Sampling steps.")
_ETA = flags.DEFINE_float("eta", 0.0, "DDIM eta.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_OUT = flags.DEFINE_string(
    "out", "samples.png", "Output PNG grid, or .npz of --num_samples samples (FID mode)."
)
_NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples", None, "FID mode: this many samples into --out (.npz; default 50000)."
)
_PER_DEVICE_BATCH = flags.DEFINE_integer(
    "per_device_batch", 32, "FID mode: samples per device in each chunk."
)
_BALANCED = flags.DEFINE_bool(
    "balanced", False, "FID mode: N / num_classes samples of each class (default: uniform)."
)
_IMAGES_DIR = flags.DEFINE_string("images_dir", None, "Also write each sample as a PNG here.")
_UPSCALE = flags.DEFINE_integer("upscale", 1, "Nearest-neighbour upscaling of the grid.")


def sample_images(
    checkpoint: str,
    labels: list[int],
    *,
    step: int | None = None,
    ema: bool = True,
    autoencoder_spec: str | None = None,
    cfg_scale: float = 4.0,
    guidance: str = "all",
    sampler: str = "ddpm",
    steps: int = 250,
    eta: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """uint8 samples (N, H, W, 3) for `labels` from a checkpoint, on every local device."""
    config, model, params, _ = load_for_sampling(checkpoint, step=step, ema=ema)
    bad = [y for y in labels if not 0 <= y < config.num_classes]
    if bad:
        raise ValueError(f"labels {bad} are outside [0, {config.num_classes})")
    autoencoder = create_autoencoder(autoencoder_spec or config.autoencoder)
    latent_shape = (config.latent_size, config.latent_size, config.latent_channels)
    sample = make_image_sample_fn(
        model,
        autoencoder,
        latent_shape=latent_shape,
        sampler=sampler,
        steps=steps,
        cfg_scale=cfg_scale,
        guidance_mode=guidance,
        eta=eta,
        diffusion_steps=config.diffusion_steps,
    )
    mesh = create_mesh((-1, 1))
    num_devices = mesh.devices.size
    padded = int(np.ceil(len(labels) / num_devices)) * num_devices
    y = np.asarray(list(labels) + [labels[-1]] * (padded - len(labels)), np.int32)
    y = jax.device_put(y, batch_sharding(mesh))
    images = sample(params, y, jax.random.key(seed))
    return np.asarray(jax.device_get(images))[: len(labels)]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _CHECKPOINT.value:
        raise app.UsageError("--checkpoint is required")
    if _NUM_SAMPLES.value is not None or _OUT.value.endswith(".npz"):
        # Sample files use every device of every process of the job.
        initialize_from_flags()
        _sample_npz_main()
        return
    try:
        labels = [int(y) for y in _LABELS.value] * _REPEATS.value
    except ValueError:
        raise app.UsageError(f"--labels must be integers, got {_LABELS.value}") from None
    try:
        images = sample_images(
            _CHECKPOINT.value,
            labels,
            step=_STEP.value,
            ema=_EMA.value,
            autoencoder_spec=_AUTOENCODER.value,
            cfg_scale=_CFG_SCALE.value,
            guidance=_GUIDANCE.value,
            sampler=_SAMPLER.value,
            steps=_STEPS.value,
            eta=_ETA.value,
            seed=_SEED.value,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    columns = min(len(labels), len(_LABELS.value))
    save_png(make_grid(images, columns=columns), _OUT.value, _UPSCALE.value)
    if _IMAGES_DIR.value:
        for i, image in enumerate(images):
            save_png(image, os.path.join(_IMAGES_DIR.value, f"{i:05d}_class{labels[i]}.png"))
    print(f"wrote {len(images)} samples to {_OUT.value}")


def _sample_npz_main() -> None:
    out = _OUT.value if _OUT.value.endswith(".npz") else None
    if out is None:
        raise app.UsageError(f"with --num_samples, --out must end in .npz, got {_OUT.value!r}")
    try:
        sample_npz(
            _CHECKPOINT.value,
            out,
            50000 if _NUM_SAMPLES.value is None else _NUM_SAMPLES.value,
            per_device_batch=_PER_DEVICE_BATCH.value,
            balanced=_BALANCED.value,
            step=_STEP.value,
            ema=_EMA.value,
            autoencoder_spec=_AUTOENCODER.value,
            cfg_scale=_CFG_SCALE.value,
            guidance=_GUIDANCE.value,
            sampler=_SAMPLER.value,
            steps=_STEPS.value,
            eta=_ETA.value,
            seed=_SEED.value,
            images_dir=_IMAGES_DIR.value,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out}")


if __name__ == "__main__":
    retain_freed_host_memory()
    app.run(main)
