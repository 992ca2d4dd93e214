"""The train step: mesh independence, a single compilation, config validation, the optimizer."""

import json
import os
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ditjax.diffusion import create_diffusion
from ditjax.models import create_model
from ditjax.parallel import create_mesh, make_global_batch
from ditjax.training import ConfigError, resolve_dataset_fields, validate_config
from ditjax.training.optimizer import clipped_adamw, learning_rate_schedule, make_optimizer
from ditjax.training.state import create_train_state
from ditjax.training.step import jit_train_step, make_train_step
from training_fixtures import DEMO_INFO, imagenet_info, load_config, tiny_config

HERE = pathlib.Path(__file__).parent


@pytest.mark.slow
def test_meshes_agree_on_loss_and_params():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run(
        [sys.executable, str(HERE / "multidevice_train_script.py"), "1x1", "8x1", "2x4", "1x8"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    reference = results["1x1"]
    assert reference["losses"][0] > 0.5  # an untrained eps-model has loss ~1
    for name, result in results.items():
        np.testing.assert_allclose(result["losses"], reference["losses"], rtol=2e-5, err_msg=name)
        np.testing.assert_allclose(result["checksum"], reference["checksum"], rtol=1e-5)
        np.testing.assert_allclose(result["qkv"], reference["qkv"], atol=1e-6, err_msg=name)


def test_train_step_compiles_once_and_learns():
    config = tiny_config()
    mesh = create_mesh((-1, 1))
    model = create_model(
        config.model, input_size=8, in_channels=3, num_classes=10, **config.model_overrides
    )
    optimizer = make_optimizer(config)
    state, shardings = create_train_state(model, optimizer, 0, (8, 8, 3), mesh)
    step_fn = chex.assert_max_traces(
        make_train_step(
            model,
            create_diffusion(),
            optimizer,
            ema_decay=0.5,
            latent_scale=1.0,
            learning_rate_fn=learning_rate_schedule(config),
        ),
        n=1,
    )
    step = jit_train_step(step_fn, shardings, mesh)
    rng = np.random.default_rng(0)
    batch = {
        "mean": (rng.normal(size=(16, 8, 8, 3)) * 0.5).astype(np.float32),
        "logvar": np.full((16, 8, 8, 3), -30.0, np.float32),
        "label": (np.arange(16) % 10).astype(np.int32),
    }
    initial = jax.device_get(state.params)
    for _ in range(4):
        state, metrics = step(state, make_global_batch(batch, mesh))
    assert int(state.step) == 4
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    final = jax.device_get(state.params)
    kernel = ["final_layer", "linear", "kernel"]
    first, last = initial, final
    for key in kernel:
        first, last = first[key], last[key]
    assert np.abs(first).max() == 0.0 and np.abs(last).max() > 0  # zero-init layer trains
    ema = jax.device_get(state.ema_params)["final_layer"]["linear"]["kernel"]
    assert 0 < np.abs(ema).max() < np.abs(last).max()  # EMA lags the params


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "DiT-XXL/2"),
        ("block_type", "resnet"),
        ("global_batch_size", 7),
        ("mesh_shape", (3, -1)),
        ("latent_size", 31),
        ("ema_decay", 1.5),
        ("preview_labels", (0, 99)),
        ("preview_sampler", "ddimX"),
        ("dtype", "float8"),
        ("learning_rate", 0.0),
        ("min_snr_gamma", -1.0),
        ("lr_decay", "step"),
        ("lr_final_fraction", 1.5),
        ("attention_impl", "flash"),
    ],
)
def test_invalid_config_names_the_field(field, value):
    config = resolve_dataset_fields(load_config("demo"), DEMO_INFO)
    config.global_batch_size = 8
    config[field] = value
    with pytest.raises(ConfigError, match=f"config.{field}"):
        validate_config(config, num_devices=2)


def test_cudnn_attention_is_refused_where_there_is_no_gpu():
    config = resolve_dataset_fields(load_config("demo"), DEMO_INFO)
    config.global_batch_size = 8
    config.attention_impl = "cudnn"
    if jax.default_backend() == "gpu":
        assert validate_config(config, num_devices=2)
    else:
        with pytest.raises(ConfigError, match=r"config\.attention_impl: cudnn needs a GPU"):
            validate_config(config, num_devices=2)


def test_cosine_decay_warms_up_then_falls_to_the_final_fraction():
    config = tiny_config()
    config.update(
        learning_rate=2e-3,
        warmup_steps=100,
        total_steps=1100,
        lr_decay="cosine",
        lr_final_fraction=0.1,
    )
    rate = learning_rate_schedule(config)
    np.testing.assert_allclose(float(rate(50)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(rate(100)), 2e-3, rtol=1e-6)
    # Halfway through the decay the cosine sits midway between the peak and the floor.
    np.testing.assert_allclose(float(rate(600)), 1.1e-3, rtol=1e-5)
    np.testing.assert_allclose(float(rate(1100)), 2e-4, rtol=1e-5)
    np.testing.assert_allclose(float(rate(5000)), 2e-4, rtol=1e-5)
    config.lr_decay = "none"
    assert float(learning_rate_schedule(config)(1100)) == pytest.approx(2e-3)


def test_clipped_adamw_clips_the_global_norm_first():
    params = {"w": jnp.ones((4,)), "b": jnp.zeros((2,))}
    grads = {"w": jnp.full((4,), 3.0), "b": jnp.full((2,), 4.0)}
    norm = float(optax.global_norm(grads))
    kwargs = dict(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
    clipped = clipped_adamw(1e-3, grad_clip_norm=1.0, **kwargs)
    plain = clipped_adamw(1e-3, grad_clip_norm=0.0, **kwargs)
    # AdamW's first update hardly depends on the gradients' scale, so compare its moments.
    _, state = clipped.update(grads, clipped.init(params), params)
    unit_grads = jax.tree.map(lambda g: g / norm, grads)
    _, plain_state = plain.update(unit_grads, plain.init(params), params)
    jax.tree.map(np.testing.assert_allclose, state[1][0].mu, plain_state[0].mu)


def test_valid_configs_pass():
    infos = {"demo": DEMO_INFO, "xl2_512": imagenet_info(512)}
    for name in ["demo", "s2", "b2", "l2", "xl2", "xl2_512"]:
        config = resolve_dataset_fields(load_config(name), infos.get(name, imagenet_info(256)))
        assert validate_config(config, num_devices=8) == (8, 1), name


def test_fields_left_to_the_dataset_must_be_resolved_first():
    with pytest.raises(ConfigError, match=r"config\.image_size: 0 .* not resolved"):
        validate_config(load_config("xl2"), num_devices=8)
