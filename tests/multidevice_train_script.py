"""Run by test_train_step.py in a subprocess with 8 fake CPU devices.

Trains a tiny DiT for a few steps on a fixed batch under several meshes and prints, as JSON,
the losses and a checksum of the params for each mesh.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax
import numpy as np

from ditjax.diffusion import create_diffusion
from ditjax.models import create_model
from ditjax.parallel import (
    create_mesh,
    make_global_batch,
)
from ditjax.training.optimizer import learning_rate_schedule, make_optimizer
from ditjax.training.state import create_train_state
from ditjax.training.step import jit_train_step, make_train_step

sys.path.insert(0, os.path.dirname(__file__))
from training_fixtures import tiny_config


def run(mesh_shape, steps=3):
    config = tiny_config()
    devices = jax.devices()[: mesh_shape[0] * mesh_shape[1]]
    mesh = create_mesh(mesh_shape, devices)
    model = create_model(
        config.model, input_size=8, in_channels=3, num_classes=10, **config.model_overrides
    )
    optimizer = make_optimizer(config)
    state, shardings = create_train_state(model, optimizer, 0, (8, 8, 3), mesh)
    step_fn = make_train_step(
        model,
        create_diffusion(),
        optimizer,
        ema_decay=0.9,
        latent_scale=1.0,
        learning_rate_fn=learning_rate_schedule(config),
    )
    step = jit_train_step(step_fn, shardings, mesh)
    rng = np.random.default_rng(0)
    batch = {
        "mean": rng.normal(size=(16, 8, 8, 3)).astype(np.float32),
        "logvar": np.full((16, 8, 8, 3), -2.0, np.float32),
        "label": (np.arange(16) % 10).astype(np.int32),
    }
    losses = []
    for _ in range(steps):
        state, metrics = step(state, make_global_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
    leaves = jax.tree.leaves(jax.device_get(state.params))
    checksum = float(sum(np.abs(leaf).sum() for leaf in leaves))
    first = np.asarray(jax.device_get(state.params["blocks"]["blocks_0"]["attn"]["qkv"]["kernel"]))
    return {"losses": losses, "checksum": checksum, "qkv": first[:4, :4].tolist()}


if __name__ == "__main__":
    shapes = [tuple(int(v) for v in s.split("x")) for s in sys.argv[1:]]
    print(json.dumps({f"{a}x{b}": run((a, b)) for a, b in shapes}))
