"""Loading trained weights (and the config they were trained with) for sampling."""

from __future__ import annotations

from typing import Any

import ml_collections

from ditjax.models import DiT
from ditjax.parallel import create_mesh
from ditjax.training.checkpoint import Checkpointer, find_checkpoint_dir
from ditjax.training.config import build_model
from ditjax.training.optimizer import make_optimizer
from ditjax.training.state import abstract_train_state, sharded_target, state_shardings


def _chosen_step(checkpointer: Checkpointer, step: int | None, root) -> int:
    """`step` if the run has it, the latest step if None; FileNotFoundError otherwise."""
    steps = checkpointer.all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoints in {root}")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in {root}; have {steps}")
    return step


def saved_config(checkpoint: str, *, step: int | None = None) -> tuple[dict, int]:
    """(the config a run saved with `step`, or its latest checkpoint, and that step), without
    reading any weights."""
    root = find_checkpoint_dir(checkpoint)
    checkpointer = Checkpointer(str(root), async_save=False)
    try:
        step = _chosen_step(checkpointer, step, root)
        return checkpointer.restore_config(step), step
    finally:
        checkpointer.close()


def load_for_sampling(
    checkpoint: str, *, step: int | None = None, ema: bool = True
) -> tuple[ml_collections.ConfigDict, DiT, Any, int]:
    """(config, model, params, step) from a run's checkpoint; EMA params unless ema=False."""
    root = find_checkpoint_dir(checkpoint)
    checkpointer = Checkpointer(str(root), async_save=False)
    try:
        step = _chosen_step(checkpointer, step, root)
        config = ml_collections.ConfigDict(checkpointer.restore_config(step))
        model = build_model(config)
        latent_shape = (config.latent_size, config.latent_size, config.latent_channels)
        abstract, boxed = abstract_train_state(
            model, make_optimizer(config), config.seed, latent_shape
        )
        shardings = state_shardings(boxed, create_mesh((-1, 1)))
        target = sharded_target(abstract, shardings)
        state = checkpointer.restore(step, target, data_iterator=None)
    finally:
        checkpointer.close()
    return config, model, state.ema_params if ema else state.params, step
