"""FID during training: EMA samples of the run, Inception features, Frechet distance to a
reference's statistics, and the Inception Score.

The samples are those `python -m ditjax.sample --num_samples=N --seed=<config.seed + 2>` writes
from the same EMA weights (labels and noise a function of that seed and the sample index), so
every evaluation of a run scores the same noise and labels, and evaluating reads nothing from
the train state but its EMA params: a resumed run trains exactly as an uninterrupted one,
evaluated or not.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from ditjax.autoencoder.base import Autoencoder
from ditjax.models import DiT
from ditjax.parallel import batch_sharding
from ditjax.sample_npz import global_batch, padded_to, per_sample_keys, sample_labels
from ditjax.sampling import make_image_sample_fn
from ditjax.training.config import ConfigError, check_eval_config

# Keeps the evaluation's noise apart from the training and preview streams of the same seed.
EVAL_KEY_OFFSET = 2
# Splits of the Inception Score, as the ADM suite has at 50K samples (fewer for tiny sets).
IS_SPLITS = 10


def load_reference_statistics(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu (2048,), sigma (2048, 2048)) float64 from a statistics or ADM reference `.npz`."""
    with epath.Path(path).open("rb") as f, np.load(f) as data:
        if "mu" not in data or "sigma" not in data:
            raise ConfigError(
                "eval_reference",
                f"{path} has no mu/sigma; write them once with `python -m ditjax.evaluate "
                f"--ref={path} --inception=... --save_stats=STATS.npz`",
            )
        mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ConfigError(
            "eval_reference", f"{path}: mu {mu.shape} and sigma {sigma.shape} do not match"
        )
    return mu, sigma


def make_fid_evaluator(
    config: ml_collections.ConfigDict,
    model: DiT,
    autoencoder: Autoencoder,
    *,
    latent_shape: tuple[int, int, int],
    mesh: jax.sharding.Mesh,
) -> Callable[[dict], dict[str, float]]:
    """`evaluate(ema_params) -> {"fid", "inception_score"}` over `config.eval_num_samples`
    samples, in chunks of `eval_per_device_batch` per device over every device of every
    process; the reference statistics and Inception weights are read once, here."""
    from ditjax.convert import load_pytorch_fid_inception
    from ditjax.evaluation.inception import inception_features
    from ditjax.evaluation.metrics import feature_statistics, frechet_distance, inception_score

    check_eval_config(config)
    ref_mu, ref_sigma = load_reference_statistics(config.eval_reference)
    inception_params = load_pytorch_fid_inception(config.eval_inception)
    sharding = batch_sharding(mesh)
    sample = make_image_sample_fn(
        model,
        autoencoder,
        out_sharding=sharding,
        latent_shape=latent_shape,
        sampler=config.eval_sampler,
        steps=config.eval_steps,
        cfg_scale=config.eval_cfg_scale,
        guidance_mode=config.eval_guidance,
        diffusion_steps=config.diffusion_steps,
    )
    features_of = jax.jit(
        lambda params, images: {
            k: v for k, v in inception_features(params, images).items() if k != "spatial"
        }
    )
    num = config.eval_num_samples
    eval_seed = config.seed + EVAL_KEY_OFFSET
    labels = sample_labels(eval_seed, num, config.num_classes, balanced=False)
    base_key = jax.random.key(eval_seed)
    chunk = config.eval_per_device_batch * mesh.devices.size

    def evaluate(ema_params: dict) -> dict[str, float]:
        pools, logits = [], []
        for offset in range(0, num, chunk):
            indices = np.arange(offset, min(offset + chunk, num))
            real = len(indices)
            padded = padded_to(indices, chunk)
            keys = per_sample_keys(base_key, global_batch(padded, sharding))
            images = sample(ema_params, global_batch(labels[padded], sharding), keys)
            features = multihost_utils.process_allgather(
                features_of(inception_params, images), tiled=True
            )
            pools.append(np.asarray(features["pool"][:real], np.float64))
            logits.append(np.asarray(features["logits"][:real], np.float64))
        mu, sigma = feature_statistics(np.concatenate(pools))
        return {
            "fid": float(frechet_distance(mu, sigma, ref_mu, ref_sigma)),
            "inception_score": float(
                inception_score(np.concatenate(logits), num_splits=min(IS_SPLITS, num))
            ),
        }

    return evaluate
