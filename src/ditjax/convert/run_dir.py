"""Writing converted weights as a ditjax run directory (an Orbax checkpoint at step 0)."""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from ditjax.training.checkpoint import Checkpointer
from ditjax.training.config import build_model, load_config_file
from ditjax.training.optimizer import make_optimizer
from ditjax.training.state import TrainState, abstract_train_state

LATENT_DOWNSAMPLE = 8
_REPO_CONFIGS = pathlib.Path(__file__).resolve().parents[3] / "configs"


def converted_run_config(
    name: str, image_size: int, *, scan_blocks: bool, config_file: str | None = None
) -> ml_collections.ConfigDict:
    """The training config recorded with converted weights (xl2.py unless told otherwise)."""
    config = load_config_file(config_file or _REPO_CONFIGS / "xl2.py")
    config.model = name
    config.image_size = image_size
    config.latent_size = image_size // LATENT_DOWNSAMPLE
    config.latent_channels = 4
    config.num_classes = 1000
    config.scan_blocks = scan_blocks
    return config


def write_converted_run(
    params: Any,
    out_dir: str,
    *,
    name: str,
    image_size: int,
    scan_blocks: bool = False,
    config_file: str | None = None,
) -> str:
    """Saves `params` (as both params and EMA) with a fresh optimizer state at step 0."""
    checkpoints = pathlib.Path(out_dir) / "checkpoints"
    if checkpoints.exists() and any(checkpoints.iterdir()):
        raise FileExistsError(f"{checkpoints} already holds checkpoints; choose an empty --out")
    config = converted_run_config(
        name, image_size, scan_blocks=scan_blocks, config_file=config_file
    )
    model = build_model(config)
    optimizer = make_optimizer(config)
    latent_shape = (config.latent_size, config.latent_size, config.latent_channels)
    abstract, _ = abstract_train_state(model, optimizer, config.seed, latent_shape)
    params = jax.tree.map(lambda a, p: np.asarray(p, a.dtype), abstract.params, params)
    state = TrainState(
        step=np.zeros((), np.int32),
        params=params,
        ema_params=params,
        opt_state=jax.device_get(optimizer.init(params)),
        rng=np.asarray(jax.random.key_data(jax.random.key(config.seed))),
    )
    checkpointer = Checkpointer(str(checkpoints), async_save=False)
    try:
        checkpointer.save_state_only(0, state, config.to_dict())
    finally:
        checkpointer.close()
    return str(checkpoints / "0")
