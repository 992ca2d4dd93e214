"""A tiny run directory with random weights, for sampling tests (no training)."""

import pathlib

import jax
import numpy as np

from ditjax.parallel import create_mesh
from ditjax.sample_npz import per_sample_keys, sample_labels
from ditjax.sampling import make_sample_fn
from ditjax.training.checkpoint import Checkpointer
from ditjax.training.config import build_model
from ditjax.training.optimizer import make_optimizer
from ditjax.training.restore import load_for_sampling
from ditjax.training.state import create_train_state
from training_fixtures import tiny_config


def write_random_run(root: pathlib.Path, seed: int = 0) -> str:
    """A run dir whose step-0 checkpoint holds a tiny DiT (8 x 8 x 3 latents, identity
    autoencoder) with every weight random, so that samples depend on label and noise."""
    config = tiny_config()
    config.image_size = config.latent_size
    config.num_classes = 10  # no dataset to take it from
    model = build_model(config)
    latent_shape = (config.latent_size, config.latent_size, config.latent_channels)
    state, _ = create_train_state(
        model, make_optimizer(config), config.seed, latent_shape, create_mesh((-1, 1))
    )
    state = jax.device_get(state)
    rng = np.random.default_rng(seed)
    # DiT zero-initialises its adaLN and output layers; perturb every weight.
    params = jax.tree.map(
        lambda p: (p + 0.01 * rng.standard_normal(p.shape)).astype(p.dtype), state.params
    )
    state = state.replace(params=params, ema_params=params)
    checkpointer = Checkpointer(str(root / "checkpoints"), async_save=False)
    try:
        checkpointer.save_state_only(0, state, config.to_dict())
    finally:
        checkpointer.close()
    return str(root)


LATENT_OPTIONS = {"sampler": "ddim", "steps": 4, "eta": 0.5, "cfg_scale": 1.5}


def latents(run_dir: str, indices: np.ndarray, sharding=None) -> np.ndarray:
    """Float latents of samples `indices` (M,), labels as in a 10-sample uniform run."""
    config, model, params, _ = load_for_sampling(run_dir)
    fn = make_sample_fn(model, latent_shape=(8, 8, 3), **LATENT_OPTIONS)
    labels = sample_labels(0, 10, config.num_classes, False)[indices]
    ids, y = np.asarray(indices, np.int32), labels
    if sharding is not None:
        ids, y = jax.device_put(ids, sharding), jax.device_put(y, sharding)
    keys = per_sample_keys(jax.random.key(0), ids)
    return np.asarray(jax.jit(fn)(params, y, keys))
